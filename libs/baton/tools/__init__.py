"""Tools: the interface every tool source implements, the registry that checks every call, and the sources."""

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
