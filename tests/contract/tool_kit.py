"""One small tool set, served by every kind of provider, for the tool-provider contract suite.

The tools behave the same whatever serves them; a write appends to an effect log (a JSON-lines file), so
effects of out-of-process servers are observed the same way as in-process ones.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp
from typing_extensions import TypedDict

from baton.contracts.models import PermissionTier
from baton.tools import ToolContext, python_tool
from baton.tools.http import HttpAuth, HttpToolConfig

TIMEOUT_S = 0.5  # the `slow` tool's declared time-out
SLOW_S = 3.0  # how long `slow` sleeps: well past its time-out
MAX_RESULT_BYTES = 2048
HUGE_BYTES = 4 * MAX_RESULT_BYTES
INVOICE_AMOUNT = 120.5
TOOL_NAMES = {"lookup", "record_payment", "slow", "bad_result", "huge_result"}


class Invoice(TypedDict):
    invoice_id: str
    amount: float


class Payment(TypedDict):
    payment_id: str
    key: str | None


class Ok(TypedDict):
    ok: bool


class Blob(TypedDict):
    blob: str


SCHEMAS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "lookup": (
        {
            "type": "object",
            "properties": {"invoice_id": {"type": "string"}},
            "required": ["invoice_id"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["invoice_id", "amount"],
        },
    ),
    "record_payment": (
        {
            "type": "object",
            "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["invoice_id", "amount"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"payment_id": {"type": "string"}, "key": {"type": ["string", "null"]}},
            "required": ["payment_id", "key"],
        },
    ),
    "slow": ({"type": "object", "properties": {}, "additionalProperties": False}, {"type": "object"}),
    "bad_result": (
        {"type": "object", "properties": {}, "additionalProperties": False},
        {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    ),
    "huge_result": ({"type": "object", "properties": {}, "additionalProperties": False}, {"type": "object"}),
}
TIERS = {
    "lookup": PermissionTier.READ,
    "record_payment": PermissionTier.WRITE,
    "slow": PermissionTier.READ,
    "bad_result": PermissionTier.READ,
    "huge_result": PermissionTier.READ,
}


class EffectLog:
    """Effects of write tools, one JSON line each, in a file every process can append to and read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def append(self, effect: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(effect) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]


class Kit:
    """What the tools do, whatever serves them."""

    def __init__(self, effects: EffectLog) -> None:
        self.effects = effects

    def lookup(self, invoice_id: str) -> Invoice:
        return {"invoice_id": invoice_id, "amount": INVOICE_AMOUNT}

    def record_payment(self, invoice_id: str, amount: float, key: str | None) -> Payment:
        payment_id = f"pay-{uuid.uuid4().hex[:8]}"
        self.effects.append({"payment_id": payment_id, "invoice_id": invoice_id, "amount": amount, "key": key})
        return {"payment_id": payment_id, "key": key}

    async def slow(self) -> dict[str, Any]:
        await asyncio.sleep(SLOW_S)
        return {}

    def bad_result(self) -> dict[str, Any]:
        return {"ok": "yes"}  # off the declared {"ok": boolean}

    def huge_result(self) -> Blob:
        return {"blob": "x" * HUGE_BYTES}


class PythonKit:
    """The tool set as Python tools (methods of a tool pack class holding the effect log)."""

    def __init__(self, effects: EffectLog) -> None:
        self.kit = Kit(effects)

    @python_tool(version="1", tier="READ", idempotent=True, max_result_bytes=MAX_RESULT_BYTES)
    def lookup(self, invoice_id: str) -> Invoice:
        """Look an invoice up."""
        return self.kit.lookup(invoice_id)

    @python_tool(version="1", tier="WRITE", idempotent=True, max_result_bytes=MAX_RESULT_BYTES)
    def record_payment(self, invoice_id: str, amount: float, context: ToolContext) -> Payment:
        """Record a payment against an invoice."""
        return self.kit.record_payment(invoice_id, amount, context.idempotency_key)

    @python_tool(version="1", tier="READ", timeout_s=TIMEOUT_S, max_result_bytes=MAX_RESULT_BYTES)
    async def slow(self) -> dict[str, Any]:
        """Take longer than the time-out."""
        return await self.kit.slow()

    @python_tool(version="1", tier="READ", max_result_bytes=MAX_RESULT_BYTES)
    def bad_result(self) -> Ok:
        """Return a value off the declared schema."""
        return self.kit.bad_result()  # type: ignore[return-value]  # the point of this tool

    @python_tool(version="1", tier="READ", max_result_bytes=MAX_RESULT_BYTES)
    def huge_result(self) -> Blob:
        """Return a value over the size bound."""
        return self.kit.huge_result()


# --- HTTP -----------------------------------------------------------------------------------------------


def http_app(effects: EffectLog) -> Starlette:
    """The tool set as HTTP endpoints (POST /tools/<name>), plus endpoints that fail on purpose."""
    kit = Kit(effects)
    seen: list[dict[str, str]] = []

    async def tool(request: Request) -> Response:
        seen.append(dict(request.headers))
        name = request.path_params["name"]
        args = await request.json()
        if name == "lookup":
            return JSONResponse(kit.lookup(args["invoice_id"]))
        if name == "record_payment":
            key = request.headers.get("idempotency-key")
            return JSONResponse(kit.record_payment(args["invoice_id"], args["amount"], key))
        if name == "slow":
            return JSONResponse(await kit.slow())
        if name == "bad_result":
            return JSONResponse(kit.bad_result())
        if name == "huge_result":
            return JSONResponse(kit.huge_result())
        return JSONResponse({"error": f"no tool {name}"}, status_code=404)

    async def status(request: Request) -> Response:
        code = int(request.path_params["code"])
        return PlainTextResponse(f"failed on purpose with {code}", status_code=code)

    async def not_json(request: Request) -> Response:
        return PlainTextResponse("<html>certainly not JSON</html>")

    async def last_headers(request: Request) -> Response:
        return JSONResponse(seen[-1] if seen else {})

    return Starlette(
        routes=[
            Route("/tools/{name}", tool, methods=["POST"]),
            Route("/status/{code:int}", status, methods=["POST"]),
            Route("/not-json", not_json, methods=["POST"]),
            Route("/seen", last_headers, methods=["GET"]),
        ]
    )


def http_tools(base_url: str, *, auth: HttpAuth | None = None) -> list[HttpToolConfig]:
    """The tool set declared as HTTP tools served at `base_url`."""
    return [
        HttpToolConfig(
            name=name,
            version="1",
            description=f"{name} over HTTP",
            url=f"{base_url}/tools/{name}",
            parameters=SCHEMAS[name][0],
            returns=SCHEMAS[name][1],
            tier=TIERS[name],
            idempotent=name in {"lookup", "record_payment"},
            timeout_s=TIMEOUT_S if name == "slow" else 10.0,
            max_result_bytes=MAX_RESULT_BYTES,
            auth=auth,
        )
        for name in sorted(TOOL_NAMES)
    ]


def free_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 and a free port; yields the base URL.

    The socket is bound and listening before uvicorn starts, so a client may connect at once: the kernel
    queues the connection until the server accepts it (nothing to wait for).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
