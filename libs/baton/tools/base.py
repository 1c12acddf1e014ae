"""The tool interface: what a tool declares, how it is called, how it fails.

Every way of providing a tool (Python functions, HTTP endpoints, MCP servers, the reference world) is a
`ToolProvider`; the registry (`baton.tools.registry`) puts providers together and checks every call and
every result against the declaration at the boundary. No broker imports here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from baton.contracts.models import FailureClass, PermissionTier

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RESULT_BYTES = 64 * 1024


@dataclass(frozen=True)
class ToolDeclaration:
    """A tool, declared once: the field's minimal tool schema (name, description, parameters, returns) plus
    what a runtime needs to call it safely.

    `tier` is None only for tools whose source carries no tiers (MCP): the workflow declaration then assigns
    one. `idempotent` says a retry with the same idempotency key is safe (the tool dedupes, or has no effect).
    """

    name: str
    version: str
    description: str
    parameters: Mapping[str, Any]
    returns: Mapping[str, Any]
    tier: PermissionTier | None = None
    idempotent: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    source: str = ""  # where it comes from, for error messages: "python:acme_tools", "http:...", "mcp:..."

    @property
    def ref(self) -> str:
        """`name@version`, as workflow declarations pin it."""
        return f"{self.name}@{self.version}"

    def as_schema(self) -> dict[str, Any]:
        """The declaration as JSON (what the declaration check locks and what a model is shown)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "parameters": dict(self.parameters),
            "returns": dict(self.returns),
            "tier": self.tier.value if self.tier is not None else None,
            "idempotent": self.idempotent,
            "timeout_s": self.timeout_s,
            "max_result_bytes": self.max_result_bytes,
        }


# ToolCall.meta key of the policy guard's grant (JSON), passed on to tools that run elsewhere: the
# `X-Baton-Grant` header of an HTTP tool, the `baton-grant` entry of an MCP call's `_meta`.
GRANT_META = "baton-grant"
GRANT_HEADER = "X-Baton-Grant"


@dataclass(frozen=True)
class ToolCall:
    """One call as a provider receives it: arguments already validated against the declaration.

    `idempotency_key` is stable across redeliveries and re-runs of the step (see `baton.ledger`); a provider
    passes it on to a tool that can honour it (an HTTP header, a keyword argument, MCP `_meta`).
    """

    tool: str
    arguments: Mapping[str, Any]
    idempotency_key: str
    tenant_id: str
    workflow_id: str
    agent: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    meta: Mapping[str, str] = field(default_factory=dict)


class ToolError(Exception):
    """A tool call failed; `code` is machine-readable, `failure_class` says whether a later retry may help.

    TRANSIENT: time-outs, 5xx, an unreachable server (retried only when the tool is idempotent).
    LOGIC: unknown tool, arguments or result off the schema, a refusal by the tool itself.
    """

    def __init__(self, code: str, message: str, failure_class: FailureClass = FailureClass.LOGIC) -> None:
        super().__init__(message)
        self.code = code
        self.failure_class = failure_class

    @property
    def transient(self) -> bool:
        return self.failure_class is FailureClass.TRANSIENT


class ToolProvider(Protocol):
    """A source of tools. `start` connects (an MCP session, an HTTP client), `close` releases it."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def declarations(self) -> Sequence[ToolDeclaration]:
        """Every tool this provider offers (an MCP server is asked; others know theirs)."""
        ...

    async def invoke(self, call: ToolCall) -> Any:
        """Run one call; returns its JSON result or raises ToolError. No validation here: the registry does it."""
        ...
