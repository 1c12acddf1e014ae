"""The contract tool set as an MCP server, written with the SDK's high-level server (MCPServer).

Over stdio: `python -m tests.contract.mcp_tool_server <effects-file>` (from the repository root).
Over streamable HTTP: `build_server(effects).streamable_http_app()`, served by uvicorn in the tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, ListToolsResult, PaginatedRequestParams, TextContent

from tests.contract.tool_kit import SCHEMAS, Blob, EffectLog, Invoice, Kit, Payment

SERVER_VERSION = "1.4"
PAGE_SIZE = 2  # tools per tools/list page, so every listing needs its cursors followed


class PagedServer(MCPServer):
    """MCPServer lists every tool in one page; this one pages them, as large servers do.

    (The SDK has no public switch for it, so the listing handler is overridden.)
    """

    async def _handle_list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        tools = await self.list_tools()
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + PAGE_SIZE
        return ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)


def build_server(effects: EffectLog, *, stdio: bool = False) -> MCPServer:
    """The tool set (plus `exit_process` and `crash_once` over stdio, to kill the session on purpose)."""
    kit = Kit(effects)

    def lookup(invoice_id: str) -> Invoice:
        """Look an invoice up."""
        return kit.lookup(invoice_id)

    def record_payment(invoice_id: str, amount: float, ctx: Context) -> Payment:
        """Record a payment against an invoice; echoes the idempotency key from the request's _meta."""
        meta = ctx.request_context.meta or {}
        key = meta.get("idempotency_key")
        return kit.record_payment(invoice_id, amount, key if isinstance(key, str) else None)

    async def slow() -> dict[str, Any]:
        """Take longer than the time-out."""
        return await kit.slow()

    def bad_result() -> CallToolResult:
        """Return structured content off the advertised output schema."""
        return CallToolResult(content=[TextContent(type="text", text="ok?")], structured_content=kit.bad_result())

    def huge_result() -> Blob:
        """Return a value over the size bound."""
        return kit.huge_result()

    def exit_process() -> dict[str, Any]:
        """End the server process mid-call (the session dies)."""
        os._exit(3)

    def crash_once() -> dict[str, Any]:
        """End the server process mid-call the first time it is called (per effect log), answer after that."""
        marker = effects.path.with_suffix(".crashed")
        if not marker.exists():
            marker.touch()
            os._exit(3)
        return {"survived": True}

    functions: list[Callable[..., Any]] = [lookup, record_payment, slow, bad_result, huge_result]
    if stdio:
        functions += [exit_process, crash_once]
    tools = [Tool.from_function(fn) for fn in functions]
    # A misbehaving server: advertise an output schema the result breaks. (Returning a CallToolResult skips
    # the SDK server's own output check, so the client side is what must refuse it.)
    bad = next(t for t in tools if t.name == "bad_result")
    bad.fn_metadata.output_schema = SCHEMAS["bad_result"][1]
    return PagedServer("baton-test-payments", version=SERVER_VERSION, tools=tools, log_level="WARNING")


if __name__ == "__main__":
    build_server(EffectLog(Path(sys.argv[1])), stdio=True).run("stdio")
