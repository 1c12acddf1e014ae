"""HTTP tools: endpoints declared in configuration (the tool pack); a call is a JSON POST of its arguments.

The idempotency key travels as the `Idempotency-Key` header, with `X-Baton-Tenant` and `X-Baton-Workflow`;
a secret (a bearer token) is read from an environment variable named in the configuration, never from the
file itself. Failures map to a ToolError whose class says whether a retry may help.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from baton.contracts.models import FailureClass, PermissionTier
from baton.tools.base import (
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_TIMEOUT_S,
    GRANT_HEADER,
    GRANT_META,
    ToolCall,
    ToolDeclaration,
    ToolError,
)

# The wire body may be larger than its canonical form (whitespace, escapes); the registry checks the exact
# canonical size, this bound only stops a runaway body from being read into memory at all.
_WIRE_SLACK = 4
_EXCERPT_CHARS = 200


class EnvSecret(BaseModel):
    """A secret taken from an environment variable at start (`prefix` is prepended, e.g. "Bearer ")."""

    model_config = ConfigDict(extra="forbid")

    secret_env: str = Field(min_length=1)
    prefix: str = ""

    def resolve(self, where: str) -> str:
        """The secret's value; MISSING_SECRET naming the variable when it is unset or empty."""
        value = os.environ.get(self.secret_env)
        if not value:
            raise ToolError(
                "MISSING_SECRET",
                f"{where} needs a secret from environment variable {self.secret_env}, which is not set: "
                f"export {self.secret_env} before starting (or fix secret_env in the tool pack)",
            )
        return self.prefix + value


class HttpAuth(EnvSecret):
    """An auth header whose value comes from the environment: `{header, secret_env, prefix}`."""

    header: str = Field("Authorization", min_length=1)


class HttpToolConfig(BaseModel):
    """One HTTP tool as the tool pack declares it."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    url: str
    method: Literal["POST"] = "POST"
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    returns: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    tier: PermissionTier | None = None
    idempotent: bool = False
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    max_result_bytes: int = Field(DEFAULT_MAX_RESULT_BYTES, gt=0)
    auth: HttpAuth | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url

    def declaration(self) -> ToolDeclaration:
        """The tool's declaration, as the registry checks it."""
        return ToolDeclaration(
            name=self.name,
            version=self.version,
            description=self.description,
            parameters=self.parameters,
            returns=self.returns,
            tier=self.tier,
            idempotent=self.idempotent,
            timeout_s=self.timeout_s,
            max_result_bytes=self.max_result_bytes,
            source=f"http:{self.url}",
        )


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


class HttpToolProvider:
    """Tools served by HTTP endpoints; one `httpx.AsyncClient` per provider, opened by `start`."""

    def __init__(self, tools: Sequence[HttpToolConfig], *, name: str = "http") -> None:
        self.name = name
        self._tools = {t.name: t for t in tools}
        if len(self._tools) != len(tools):
            names = [t.name for t in tools]
            raise ValueError(f"{name}: two HTTP tools share a name: {sorted({n for n in names if names.count(n) > 1})}")
        self._auth: dict[str, Mapping[str, str]] = {}
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # Every secret is resolved before anything connects, so a missing one fails the start, not a call.
        self._auth = {
            t.name: {t.auth.header: t.auth.resolve(f"HTTP tool {t.name!r}")} if t.auth is not None else {}
            for t in self._tools.values()
        }
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def declarations(self) -> Sequence[ToolDeclaration]:
        return [t.declaration() for t in self._tools.values()]

    async def invoke(self, call: ToolCall) -> Any:
        tool = self._tools.get(call.tool)
        if tool is None:
            raise ToolError("UNKNOWN_TOOL", f"{self.name} has no tool {call.tool!r}; it has {sorted(self._tools)}")
        if self._client is None:
            raise ToolError("NOT_STARTED", f"{self.name}: call start() before invoking {call.tool!r}")
        headers = {
            "Idempotency-Key": call.idempotency_key,
            "X-Baton-Tenant": call.tenant_id,
            "X-Baton-Workflow": call.workflow_id,
            "X-Baton-Agent": call.agent,
            **({GRANT_HEADER: call.meta[GRANT_META]} if GRANT_META in call.meta else {}),
            **self._auth.get(tool.name, {}),
        }
        where = f"HTTP tool {tool.name!r} at {tool.url}"
        limit = tool.max_result_bytes * _WIRE_SLACK
        try:
            async with self._client.stream(
                tool.method, tool.url, json=dict(call.arguments), headers=headers, timeout=tool.timeout_s
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise ToolError(
                            "RESULT_TOO_LARGE",
                            f"{where} sent a body over {limit} bytes (its bound is {tool.max_result_bytes}): refused "
                            "unread; return a reference to large data instead",
                        )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ToolError(
                "UNREACHABLE",
                f"{where} is unreachable ({type(exc).__name__}: {exc}); check that the service runs and the URL "
                "is right (a retry may succeed once it is up)",
                FailureClass.TRANSIENT,
            ) from exc
        except httpx.TimeoutException as exc:
            raise ToolError(
                "TIMEOUT",
                f"{where} did not answer within its {tool.timeout_s:g}s time-out; raise timeout_s if it is just slow",
                FailureClass.TRANSIENT,
            ) from exc
        except httpx.TransportError as exc:
            # The request may have been sent and acted on: not UNREACHABLE, which promises nothing ran.
            raise ToolError(
                "CONNECTION_LOST",
                f"{where}: the connection failed during the call ({type(exc).__name__}: {exc}); the call may or may "
                "not have acted",
                FailureClass.TRANSIENT,
            ) from exc
        return self._decode(where, response.status_code, bytes(body))

    @staticmethod
    def _decode(where: str, status: int, body: bytes) -> Any:
        if status == 429:
            raise ToolError("RATE_LIMITED", f"{where} answered 429 (rate limited); retry later", FailureClass.TRANSIENT)
        if status >= 500:
            raise ToolError(
                f"HTTP_{status}",
                f"{where} answered {status} (a server-side failure): {_excerpt(body)!r}; a retry may succeed",
                FailureClass.TRANSIENT,
            )
        if status >= 400:
            raise ToolError(
                f"HTTP_{status}",
                f"{where} refused the call with {status}: {_excerpt(body)!r}; fix the call or the tool's "
                "configuration (retrying the same call will not help)",
            )
        if not 200 <= status < 300:
            raise ToolError("BAD_RESULT", f"{where} answered {status}, not a 2xx with a JSON body")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ToolError(
                "BAD_RESULT",
                f"{where} answered {status} with a body that is not JSON: {_excerpt(body)!r}; the endpoint must "
                "return a JSON object",
            ) from exc
