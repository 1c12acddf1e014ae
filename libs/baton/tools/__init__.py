"""Tools: the interface every tool source implements, the registry that checks every call, and the sources.

HTTP and MCP sources live in `baton.tools.http` and `baton.tools.mcp`, and tool-pack files in
`baton.tools.packs`; they are not imported here, so a service that needs no tools never loads the MCP SDK.
"""

from baton.tools.base import ToolCall, ToolDeclaration, ToolError, ToolProvider
from baton.tools.python import PythonTool, PythonToolProvider, ToolContext, python_tool, tools_of
from baton.tools.registry import ToolRegistry, schema_problems

__all__ = [
    "PythonTool",
    "PythonToolProvider",
    "ToolCall",
    "ToolContext",
    "ToolDeclaration",
    "ToolError",
    "ToolProvider",
    "ToolRegistry",
    "python_tool",
    "schema_problems",
    "tools_of",
]
