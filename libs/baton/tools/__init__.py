"""Tools: the interface every tool source implements, the registry that checks every call, and the sources."""

from baton.tools.base import ToolCall, ToolDeclaration, ToolError, ToolProvider
from baton.tools.http import EnvSecret, HttpAuth, HttpToolConfig, HttpToolProvider
from baton.tools.mcp import McpServerConfig, McpToolProvider
from baton.tools.packs import ToolPack, ToolPackError, load_tool_pack, parse_tool_pack
from baton.tools.python import PythonToolProvider, ToolContext, python_tool, tools_of
from baton.tools.registry import ToolRegistry, schema_problems

__all__ = [
    "EnvSecret",
    "HttpAuth",
    "HttpToolConfig",
    "HttpToolProvider",
    "McpServerConfig",
    "McpToolProvider",
    "PythonToolProvider",
    "ToolCall",
    "ToolContext",
    "ToolDeclaration",
    "ToolError",
    "ToolPack",
    "ToolPackError",
    "ToolProvider",
    "ToolRegistry",
    "load_tool_pack",
    "parse_tool_pack",
    "python_tool",
    "schema_problems",
    "tools_of",
]
