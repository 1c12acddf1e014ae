"""Serve tools over HTTP, the way the HTTP tool provider calls them, checking the guard's grant on the tool's side.

A tool that runs in its own process cannot be reached around the guard: a call without the policy guard's grant
for exactly it (tool, arguments, idempotency key, workflow), or with one already used or expired, is refused
with 403 before the tool runs. This is what makes the guard unbypassable even by a compromised agent process,
which could skip any check made inside itself (docs/decisions/0016-guard-grants-checked-where-tools-run.md).

    app = tool_app(registry, verifier=GrantVerifier(keyring, Ledger(path).consume_grant))
    configs = http_configs("http://tools.internal:8080", registry)   # the agents' side: HttpToolProvider(configs)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from baton.contracts.models import FailureClass
from baton.policy.grants import GrantRefusedError, GrantVerifier
from baton.tools.base import GRANT_HEADER, ToolError
from baton.tools.http import HttpToolConfig
from baton.tools.registry import ToolRegistry

TOOL_PATH = "/tools/{name}"


def _refusal(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "error": message}, status_code=status)


def tool_app(
    registry: ToolRegistry, *, verifier: GrantVerifier | None, clock: Callable[[], float] = time.time
) -> Starlette:
    """An ASGI app serving every tool of a started registry at POST /tools/{name} (verifier None: no grant check,
    for tools that need none; say so where it is deployed)."""

    async def call(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        names = {d.name for d in registry.declarations()}
        if name not in names:
            return _refusal(404, "UNKNOWN_TOOL", f"no tool {name!r} here; this server has {sorted(names)}")
        try:
            arguments: Any = await request.json()
        except ValueError:
            return _refusal(400, "BAD_ARGUMENTS", "the body must be the arguments as a JSON object")
        if not isinstance(arguments, dict):
            return _refusal(400, "BAD_ARGUMENTS", "the body must be the arguments as a JSON object")
        key = request.headers.get("Idempotency-Key", "")
        tenant = request.headers.get("X-Baton-Tenant", "")
        workflow = request.headers.get("X-Baton-Workflow", "")
        if not (key and tenant and workflow):
            return _refusal(
                400, "BAD_REQUEST", "Idempotency-Key, X-Baton-Tenant and X-Baton-Workflow headers are required"
            )
        if verifier is not None:
            try:
                verifier.verify(
                    request.headers.get(GRANT_HEADER),
                    tool=name,
                    arguments=arguments,
                    idempotency_key=key,
                    workflow_id=workflow,
                    tenant_id=tenant,
                    agent=request.headers.get("X-Baton-Agent", ""),
                    now=clock(),
                )
            except GrantRefusedError as exc:
                return _refusal(403, exc.code, str(exc))
        try:
            result = await registry.invoke(name, arguments, idempotency_key=key, tenant_id=tenant, workflow_id=workflow)
        except ToolError as exc:
            status = 503 if exc.failure_class is FailureClass.TRANSIENT else 422
            return _refusal(status, exc.code, str(exc))
        return JSONResponse(result)

    return Starlette(routes=[Route(TOOL_PATH, call, methods=["POST"])])


def http_configs(base_url: str, registry: ToolRegistry) -> list[HttpToolConfig]:
    """The HTTP tool configs an agent uses to call this server's tools (same declarations, same versions)."""
    out: list[HttpToolConfig] = []
    for d in sorted(registry.declarations(), key=lambda d: d.name):
        out.append(
            HttpToolConfig(
                name=d.name,
                version=d.version,
                description=d.description,
                url=base_url.rstrip("/") + TOOL_PATH.format(name=d.name),
                parameters=dict(d.parameters),
                returns=dict(d.returns),
                tier=d.tier,
                idempotent=d.idempotent,
                timeout_s=d.timeout_s,
                max_result_bytes=d.max_result_bytes,
            )
        )
    return out
