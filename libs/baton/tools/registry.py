"""The tool registry: providers put together, every call and result checked against its declaration.

Arguments are validated before anything runs; a result off its schema or over its size bound is refused
the same way, so nothing malformed enters a context. Time-outs are enforced here, whatever the provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from baton.context import NonCanonicalContextError, canonical_bytes
from baton.contracts.models import FailureClass
from baton.tools.base import GRANT_META, ToolCall, ToolDeclaration, ToolError, ToolProvider


def _clip(text: str, limit: int = 120) -> str:
    """At most `limit` characters of a value or message: errors go into step results, traces and the audit."""
    return text if len(text) <= limit else text[:limit] + "..."


def _where(error: SchemaError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return path or "(the whole value)"


def schema_problems(schema: Mapping[str, Any], value: Any, *, limit: int = 5) -> list[str]:
    """What is wrong with a value under a JSON Schema: one line per error, naming the field and what was expected."""
    validator = Draft202012Validator(dict(schema))
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    out: list[str] = []
    for error in errors[:limit]:
        if error.validator == "required":
            missing = str(error.message).split("'")[1] if "'" in error.message else error.message
            where = _where(error)
            field = missing if where == "(the whole value)" else f"{where}.{missing}"
            out.append(f"{field}: required, missing")
        elif error.validator == "additionalProperties":
            out.append(f"{_where(error)}: {error.message}")
        else:
            expected = _clip(repr(error.validator_value), 80)
            out.append(f"{_where(error)}: expected {error.validator} {expected}, got {_clip(repr(error.instance), 80)}")
    if len(errors) > limit:
        out.append(f"... and {len(errors) - limit} more")
    return out


class ToolRegistry:
    """Tools by name, from every provider; `invoke` is the one way a tool runs."""

    def __init__(self, providers: Iterable[ToolProvider]) -> None:
        self.providers = list(providers)
        self._tools: dict[str, tuple[ToolDeclaration, ToolProvider]] = {}
        self._validators: dict[str, tuple[Draft202012Validator, Draft202012Validator]] = {}

    async def start(self) -> None:
        """Start every provider and list its tools; a name offered twice is an error (which one would run?).
        On any failure the providers already started are closed again (no MCP server process left behind)."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        for provider in self.providers:
            await provider.start()
        self._tools.clear()
        for provider in self.providers:
            for declaration in await provider.declarations():
                if declaration.name in self._tools:
                    other = self._tools[declaration.name][1].name
                    raise ToolError(
                        "DUPLICATE_TOOL",
                        f"tool {declaration.name!r} is offered by both {other} and {provider.name}: rename one "
                        "(a workflow must know which one it calls)",
                    )
                for what, schema in (("parameters", declaration.parameters), ("returns", declaration.returns)):
                    try:
                        Draft202012Validator.check_schema(dict(schema))
                    except Exception as exc:
                        raise ToolError(
                            "BAD_DECLARATION",
                            f"{declaration.ref} from {provider.name}: its {what} schema is invalid: {exc}",
                        ) from exc
                self._tools[declaration.name] = (declaration, provider)
                self._validators[declaration.name] = (
                    Draft202012Validator(dict(declaration.parameters)),
                    Draft202012Validator(dict(declaration.returns)),
                )

    async def close(self) -> None:
        """Close every provider, even when one fails to close (the first failure is raised after)."""
        failure: BaseException | None = None
        for provider in reversed(self.providers):
            try:
                await provider.close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def declarations(self) -> list[ToolDeclaration]:
        return [d for d, _ in self._tools.values()]

    def get(self, name: str) -> ToolDeclaration | None:
        found = self._tools.get(name)
        return found[0] if found is not None else None

    def declaration(self, name: str) -> ToolDeclaration:
        found = self.get(name)
        if found is None:
            raise ToolError("UNKNOWN_TOOL", f"no tool {name!r} in the registry; registered: {sorted(self._tools)}")
        return found

    def check_arguments(self, name: str, arguments: Mapping[str, Any]) -> None:
        """Raise BAD_ARGUMENTS naming each field that breaks the tool's parameters schema."""
        declaration = self.declaration(name)
        if not self._validators[name][0].is_valid(dict(arguments)):
            problems = schema_problems(declaration.parameters, dict(arguments))
            raise ToolError(
                "BAD_ARGUMENTS",
                f"{declaration.ref} was called with arguments that break its schema, nothing ran: "
                + "; ".join(problems),
            )

    def check_result(self, name: str, result: Any) -> dict[str, Any]:
        """The result, if it is a JSON object within the declared size bound and schema; else BAD_RESULT."""
        declaration = self.declaration(name)
        try:
            size = len(canonical_bytes(result))
        except NonCanonicalContextError as exc:
            raise ToolError("BAD_RESULT", f"{declaration.ref} returned a value with no JSON encoding: {exc}") from exc
        if size > declaration.max_result_bytes:
            raise ToolError(
                "RESULT_TOO_LARGE",
                f"{declaration.ref} returned {size} bytes, over its bound of {declaration.max_result_bytes}: "
                "the result was refused and not stored; return a reference to large data instead",
            )
        if not isinstance(result, dict):
            raise ToolError("BAD_RESULT", f"{declaration.ref} returned {type(result).__name__}, not a JSON object")
        if not self._validators[name][1].is_valid(result):
            raise ToolError(
                "BAD_RESULT",
                f"{declaration.ref} returned a result that breaks its declared schema, refused: "
                + "; ".join(schema_problems(declaration.returns, result)),
            )
        return result

    async def invoke(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        idempotency_key: str,
        tenant_id: str,
        workflow_id: str,
        agent: str = "",
        arguments_checked: bool = False,
        grant: str | None = None,
    ) -> dict[str, Any]:
        """Validate (unless the caller just did, with check_arguments), run within the declared time-out, validate
        the result; ToolError with its failure class."""
        declaration = self.declaration(name)
        if not arguments_checked:
            self.check_arguments(name, arguments)
        provider = self._tools[name][1]
        call = ToolCall(
            tool=name,
            arguments=dict(arguments),
            idempotency_key=idempotency_key,
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            agent=agent,
            timeout_s=declaration.timeout_s,
            meta={GRANT_META: grant} if grant else {},
        )
        try:
            async with asyncio.timeout(declaration.timeout_s):  # no extra task, unlike wait_for
                result = await provider.invoke(call)
        except TimeoutError as exc:
            raise ToolError(
                "TIMEOUT",
                f"{declaration.ref} did not answer within its {declaration.timeout_s:g}s time-out",
                FailureClass.TRANSIENT,
            ) from exc
        except ToolError:
            raise
        except Exception as exc:
            # A tool that crashed (a KeyError, a database error) ends its step like any other failure, never as a
            # handler crash the step is retried on; it may have acted before it raised.
            raise ToolError(
                "TOOL_FAILED",
                f"{declaration.ref} raised {type(exc).__name__}: {_clip(str(exc))}; fix the tool (see its logs)",
            ) from exc
        return self.check_result(name, result)
