"""MCP tools: the tools of an MCP server, over stdio (a command Baton starts) or streamable HTTP (a URL).

The session is opened by `start` and kept open. MCP carries no permission tiers, so every declaration has
`tier=None` and the workflow declaration assigns one; the version is the one the tool pack pins for the
server (else the server's own `serverInfo.version`). The idempotency key is sent in the call's `_meta`
(`idempotency_key`), so a server that can honour it does.

A session that dies is re-opened once. A call that was in flight when it died may or may not have run, so
it is re-sent only when the tool is declared idempotent; otherwise the caller gets CONNECTION_LOST (TRANSIENT)
and the next call uses the new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client  # the SDK's client with its time-outs (no public path)
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, Field, model_validator

from baton.contracts.models import FailureClass
from baton.tools.base import DEFAULT_MAX_RESULT_BYTES, DEFAULT_TIMEOUT_S, ToolCall, ToolDeclaration, ToolError
from baton.tools.http import EnvSecret

log = logging.getLogger(__name__)

PERMISSIVE_RETURNS: Mapping[str, Any] = {"type": "object"}
_MAX_LIST_PAGES = 1000  # a server whose cursor never ends cannot hang the start
_EXCERPT_CHARS = 500


class McpServerConfig(BaseModel):
    """One MCP server as the tool pack declares it."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    server: str = Field(min_length=1)
    transport: Literal["stdio", "streamable-http"] = "stdio"
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    cwd: str | None = None
    env: dict[str, str | EnvSecret] = Field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str | EnvSecret] = Field(default_factory=dict)
    version: str | None = None
    idempotent: list[str] = Field(default_factory=list)
    # The server's tools this pack uses (default: all it offers). Given, an agent that calls none of them does
    # not start the server at all (no process, no secrets), and the others are not registered.
    tools: list[str] | None = None
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    timeouts: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)  # per tool, over timeout_s
    max_result_bytes: int = Field(DEFAULT_MAX_RESULT_BYTES, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError(f"MCP server {self.server!r}: transport stdio needs a command")
            if self.url is not None or self.headers:
                raise ValueError(f"MCP server {self.server!r}: url and headers are for transport streamable-http")
        else:
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError(f"MCP server {self.server!r}: transport streamable-http needs an http(s) url")
            if self.command is not None or self.args or self.env or self.cwd is not None:
                raise ValueError(f"MCP server {self.server!r}: command, args, env and cwd are for transport stdio")
        return self

    @property
    def target(self) -> str:
        """What is connected to, for messages: the command line or the URL."""
        if self.transport == "stdio":
            return " ".join([self.command or "", *self.args]) + (f" (in {self.cwd})" if self.cwd else "")
        return self.url or ""


def _secrets(values: Mapping[str, str | EnvSecret], where: str) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v.resolve(where) for k, v in values.items()}


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    return "; ".join(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__ for e in _leaves(exc))


def _connection_lost(exc: BaseException) -> bool:
    lost = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError)
    return all(isinstance(e, lost) or (isinstance(e, MCPError) and e.code == CONNECTION_CLOSED) for e in _leaves(exc))


class _Session:
    """One open MCP client, owned by a task of its own.

    anyio requires a cancel scope (the SDK's transports are full of them) to be exited by the task that
    entered it; `start` and `close` may run in different tasks, so neither enters the client itself.
    """

    def __init__(self, opener: Callable[[], AbstractAsyncContextManager[Client]], label: str) -> None:
        self._opener = opener
        self._label = label
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def open(self, timeout_s: float) -> Client:
        self._task = asyncio.create_task(self._own(), name=f"baton-{self._label}-session")
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except BaseException:
            await self.close()
            raise

    async def _own(self) -> None:
        try:
            async with self._opener() as client:
                self._ready.set_result(client)
                await self._stop.wait()
        except Exception as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                # The session ended on its own; the next call sees it is not alive and re-opens it.
                log.warning("MCP session %s ended: %s", self._label, _describe(exc))
        except BaseException:
            if not self._ready.done():
                self._ready.cancel()  # closed while connecting: nobody waits for this session any more
            raise

    @property
    def alive(self) -> bool:
        """False once the session ended on its own (its transport failed): nothing can be sent on it."""
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            if not self._ready.done():
                self._task.cancel()  # still connecting: nothing to shut down cleanly
            # A session that died on its own ends with its transport's error: closing it is all that is wanted.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        if not self._ready.done():
            self._ready.cancel()


class McpToolProvider:
    """The tools of one MCP server; safe to call from several tasks at once (calls share the session)."""

    def __init__(self, config: McpServerConfig) -> None:
        self.name = f"mcp:{config.server}"
        self.config = config
        self._session: _Session | None = None
        self._client: Client | None = None
        self._declarations: dict[str, ToolDeclaration] = {}
        self._lock = asyncio.Lock()  # one (re)connect at a time; calls themselves run concurrently
        self._reopening: asyncio.Task[Client] | None = None

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Client]:
        c = self.config
        if c.transport == "stdio":
            assert c.command is not None  # checked by McpServerConfig
            params = StdioServerParameters(
                command=c.command, args=c.args, env=_secrets(c.env, self.name) or None, cwd=c.cwd
            )
            async with Client(params, cache=None) as client:
                yield client
            return
        assert c.url is not None  # checked by McpServerConfig
        async with (
            create_mcp_http_client(headers=_secrets(c.headers, self.name) or None) as http,
            Client(streamable_http_client(c.url, http_client=http), cache=None) as client,
        ):
            yield client

    async def _connect(self) -> tuple[Client, dict[str, ToolDeclaration]]:
        """Open a session and list the server's tools on it (the SDK checks results against that listing)."""
        # Secrets are resolved here, before the session task, so a missing one is MISSING_SECRET, not UNREACHABLE.
        _secrets(self.config.env, self.name)
        _secrets(self.config.headers, self.name)
        where = f"MCP server {self.config.server!r} ({self.config.target})"
        session = _Session(self._open, self.name)
        try:
            client = await session.open(self.config.connect_timeout_s)
        except Exception as exc:
            what = (
                "the command exists and starts an MCP server"
                if self.config.transport == "stdio"
                else ("an MCP server listens at that URL")
            )
            detail = "no answer in time" if isinstance(exc, TimeoutError) else _describe(exc)
            raise ToolError(
                "UNREACHABLE",
                f"{where} could not be reached: {detail}; check that {what} (a retry may succeed once it is up)",
                FailureClass.TRANSIENT,
            ) from exc
        try:
            listing = await self._list(client)
        except ToolError:
            await session.close()
            raise
        except Exception as exc:
            await session.close()
            raise ToolError(
                "UNREACHABLE", f"{where} failed to list its tools: {_describe(exc)}", FailureClass.TRANSIENT
            ) from exc
        self._session, self._client = session, client
        return client, listing

    async def start(self) -> None:
        async with self._lock:
            if self._client is None:
                _, self._declarations = await self._connect()

    async def _list(self, client: Client) -> dict[str, ToolDeclaration]:
        version = self.config.version or (client.server_info.version if client.server_info else "")
        if not version:
            raise ToolError(
                "NO_VERSION",
                f"MCP server {self.config.server!r} reports no version: pin one with `version:` in the tool pack",
            )
        found: dict[str, ToolDeclaration] = {}
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                found[tool.name] = ToolDeclaration(
                    name=tool.name,
                    version=version,
                    description=tool.description or "",
                    parameters=dict(tool.input_schema),
                    returns=dict(tool.output_schema) if tool.output_schema is not None else dict(PERMISSIVE_RETURNS),
                    tier=None,
                    idempotent=tool.name in self.config.idempotent,
                    timeout_s=self.config.timeouts.get(tool.name, self.config.timeout_s),
                    max_result_bytes=self.config.max_result_bytes,
                    source=f"mcp:{self.config.server}",
                )
            cursor = page.next_cursor
            if cursor is None:
                break
        named_sets = (
            ("tools", self.config.tools or []),
            ("idempotent", self.config.idempotent),
            ("timeouts", self.config.timeouts),
        )
        for what, named in named_sets:
            if unknown := sorted(set(named) - set(found)):
                raise ToolError(
                    "UNKNOWN_TOOL",
                    f"the tool pack names {unknown} under {what} of MCP server {self.config.server!r}, but the "
                    f"server offers no such tool (it offers {sorted(found)}): fix the name",
                )
        if self.config.tools is not None:
            found = {name: d for name, d in found.items() if name in self.config.tools}
        return found

    async def _close_session(self) -> None:
        session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()

    async def close(self) -> None:
        reopening, self._reopening = self._reopening, None
        if reopening is not None and not reopening.done():
            reopening.cancel()
            with contextlib.suppress(asyncio.CancelledError, ToolError):
                await reopening
        async with self._lock:
            await self._close_session()

    async def declarations(self) -> Sequence[ToolDeclaration]:
        return list(self._declarations.values())

    def _reopen(self, dead: Client | None) -> asyncio.Task[Client]:
        """Re-open the session, or join the re-opening already under way.

        It runs in a task of its own: a caller whose time-out fires mid-way must not abandon it half-open
        (the next caller would start over, and with a short time-out never finish).
        """
        if self._reopening is None or self._reopening.done():

            async def reopen() -> Client:
                async with self._lock:
                    if self._client is not None and self._client is not dead:
                        return self._client  # re-opened meanwhile
                    await self._close_session()
                    client, listing = await self._connect()
                    if {n: d.as_schema() for n, d in listing.items()} != {
                        n: d.as_schema() for n, d in self._declarations.items()
                    }:
                        log.warning(
                            "MCP server %s changed its tools since start; calls are still checked against the "
                            "declarations taken at start (restart to take the new ones)",
                            self.config.server,
                        )
                    return client

            self._reopening = asyncio.create_task(reopen(), name=f"baton-{self.name}-reopen")
            # Read the outcome even when no caller waits for it, so a failure is not reported as unretrieved.
            self._reopening.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._reopening

    async def _live_client(self) -> Client:
        client, session = self._client, self._session
        if client is not None and session is not None and session.alive:
            return client
        # Nothing was sent on a session already gone: re-opening it and sending is safe for any tool.
        return await asyncio.shield(self._reopen(client))

    async def invoke(self, call: ToolCall) -> Any:
        declaration = self._declarations.get(call.tool)
        if declaration is None:
            raise ToolError(
                "UNKNOWN_TOOL", f"{self.name} has no tool {call.tool!r}; it has {sorted(self._declarations)}"
            )
        client = await self._live_client()
        try:
            result = await self._call(client, call)
        except _ConnectionLostError as exc:
            reopening = self._reopen(client)
            if not declaration.idempotent:
                raise ToolError(
                    "CONNECTION_LOST",
                    f"{declaration.ref}: the session with MCP server {self.config.server!r} dropped during the call "
                    f"({exc}), which may or may not have run; it was not re-sent because the tool is not declared "
                    "idempotent. The session is being re-opened for the next call",
                    FailureClass.TRANSIENT,
                ) from exc
            client = await asyncio.shield(reopening)
            try:
                result = await self._call(client, call)
            except _ConnectionLostError as again:
                raise ToolError(
                    "CONNECTION_LOST",
                    f"{declaration.ref}: the session with MCP server {self.config.server!r} ({self.config.target}) "
                    f"dropped again right after it was re-opened ({again}); check the server",
                    FailureClass.TRANSIENT,
                ) from again
        return self._result(declaration, result)

    async def _call(self, client: Client, call: ToolCall) -> CallToolResult:
        meta: dict[str, Any] = {
            **call.meta,
            "idempotency_key": call.idempotency_key,
            "baton/tenant_id": call.tenant_id,
            "baton/workflow_id": call.workflow_id,
        }
        where = f"{call.tool} on MCP server {self.config.server!r}"
        try:
            # RequestParamsMeta is an open TypedDict (PEP 728 extra_items), which mypy does not understand yet.
            return await client.call_tool(
                call.tool,
                dict(call.arguments),
                read_timeout_seconds=call.timeout_s,
                meta=meta,  # type: ignore[arg-type]
            )
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                raise _ConnectionLostError(str(exc)) from exc
            if exc.code == REQUEST_TIMEOUT:
                raise ToolError(
                    "TIMEOUT", f"{where} did not answer within {call.timeout_s:g}s", FailureClass.TRANSIENT
                ) from exc
            raise ToolError("TOOL_FAILED", f"{where} answered with error {exc.code}: {exc.message}") from exc
        except RuntimeError as exc:
            # The SDK checks structured content against the tool's outputSchema before we see it.
            if "structured content" in str(exc):
                raise ToolError("BAD_RESULT", f"{where} returned a result off its declared schema: {exc}") from exc
            raise ToolError("TOOL_FAILED", f"{where} failed in the MCP client: {exc}") from exc
        except Exception as exc:
            if _connection_lost(exc):
                raise _ConnectionLostError(_describe(exc)) from exc
            raise

    def _result(self, declaration: ToolDeclaration, result: CallToolResult) -> Any:
        text = "\n".join(block.text for block in result.content if isinstance(block, TextContent))
        if result.is_error:
            excerpt = text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."
            raise ToolError(
                "TOOL_FAILED",
                f"{declaration.ref} on MCP server {self.config.server!r} refused the call: {excerpt!r}",
            )
        if result.structured_content is not None:
            return result.structured_content
        texts = [block for block in result.content if isinstance(block, TextContent)]
        if len(texts) == 1 and len(result.content) == 1:
            with contextlib.suppress(ValueError):
                parsed = json.loads(texts[0].text)
                if isinstance(parsed, dict):
                    return parsed
        return {"text": text}


class _ConnectionLostError(Exception):
    """The session's transport is gone (the server exited, the connection dropped)."""
