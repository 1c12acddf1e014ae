"""Python tools: functions in the user's own package, declared by a decorator; schemas come from type hints.

    from baton.tools import python_tool, ToolContext

    @python_tool(version="1", tier="READ", idempotent=True)
    def lookup_invoice(invoice_id: str) -> Invoice:   # Invoice: a pydantic model (or any typed value)
        ...

A module is loaded by path from configuration (`BATON_AGENT_TOOLS=acme_tools`); every decorated function
in it (sync or async) becomes a tool. A parameter annotated `ToolContext` is not an argument: it receives
the call's idempotency key, tenant and workflow.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from baton.contracts.models import PermissionTier
from baton.tools.base import DEFAULT_MAX_RESULT_BYTES, DEFAULT_TIMEOUT_S, ToolCall, ToolDeclaration, ToolError

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__baton_tool__"


@dataclass(frozen=True)
class ToolContext:
    """What a Python tool may know about the call it serves."""

    idempotency_key: str
    tenant_id: str
    workflow_id: str
    agent: str


@dataclass(frozen=True)
class PythonTool:
    """A decorated function with its declaration and the models that check its input and output."""

    declaration: ToolDeclaration
    function: Callable[..., Any]
    arguments: type[BaseModel]
    result: TypeAdapter[Any]
    context_param: str | None
    wraps_result: bool

    async def __call__(self, call: ToolCall, executor: Executor | None = None) -> Any:
        try:
            parsed = self.arguments.model_validate(dict(call.arguments))
        except ValidationError as exc:
            raise ToolError("BAD_ARGUMENTS", f"{self.declaration.name}: {exc}") from exc
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if self.context_param is not None:
            kwargs[self.context_param] = ToolContext(call.idempotency_key, call.tenant_id, call.workflow_id, call.agent)
        if inspect.iscoroutinefunction(self.function):
            value = await self.function(**kwargs)
        else:
            # A blocking function runs in a worker thread, so a slow tool never stalls the event loop.
            value = await asyncio.get_running_loop().run_in_executor(executor, partial(self.function, **kwargs))
        try:
            checked = self.result.validate_python(value, strict=True)
        except ValidationError as exc:
            raise ToolError(
                "BAD_RESULT", f"{self.declaration.name} returned a value off its declared return type: {exc}"
            ) from exc
        dumped = self.result.dump_python(checked, mode="json")
        return {"result": dumped} if self.wraps_result else dumped


def _declare(
    fn: Callable[..., Any],
    *,
    name: str | None,
    version: str,
    tier: PermissionTier | str | None,
    idempotent: bool,
    timeout_s: float,
    max_result_bytes: int,
    description: str | None,
) -> PythonTool:
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for param in inspect.signature(fn).parameters.values():
        if param.name == "self":
            continue  # a method of a tool pack class: bound when the pack is instantiated (tools_of(pack))
        hint = hints.get(param.name)
        if hint is ToolContext:
            context_param = param.name
            continue
        if hint is None:
            raise TypeError(f"tool {fn.__qualname__}: parameter {param.name!r} has no type hint; annotate it")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hint, default)
    if "return" not in hints:
        raise TypeError(f"tool {fn.__qualname__}: annotate its return type (a pydantic model or a JSON type)")
    arguments = create_model(f"{fn.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    returns_hint = hints["return"]
    result: TypeAdapter[Any] = TypeAdapter(returns_hint)
    returns = result.json_schema()
    # A result is a JSON object in the context; any other value is wrapped as {"result": value} (as MCP does).
    wraps = returns.get("type") != "object" and not (
        isinstance(returns_hint, type) and issubclass(returns_hint, BaseModel)
    )
    if wraps:
        returns = {"type": "object", "properties": {"result": returns}, "required": ["result"]}
    declaration = ToolDeclaration(
        name=name or fn.__name__,
        version=version,
        description=description if description is not None else inspect.cleandoc(fn.__doc__ or ""),
        parameters=arguments.model_json_schema(),
        returns=returns,
        tier=PermissionTier(tier) if tier is not None else None,
        idempotent=idempotent,
        timeout_s=timeout_s,
        max_result_bytes=max_result_bytes,
        source=f"python:{fn.__module__}",
    )
    return PythonTool(declaration, fn, arguments, result, context_param, wraps)


def python_tool(
    *,
    version: str,
    tier: PermissionTier | str,
    idempotent: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    name: str | None = None,
    description: str | None = None,
) -> Callable[[F], F]:
    """Declare a function as a tool (the function itself is returned unchanged, still callable directly)."""

    def mark(fn: F) -> F:
        setattr(
            fn,
            _MARK,
            _declare(
                fn,
                name=name,
                version=version,
                tier=tier,
                idempotent=idempotent,
                timeout_s=timeout_s,
                max_result_bytes=max_result_bytes,
                description=description,
            ),
        )
        return fn

    return mark


def tools_of(*objects: Any) -> list[PythonTool]:
    """The tools declared on these functions, in these modules, or as methods of these objects (a tool pack
    class holding a connection), in definition order."""
    found: list[PythonTool] = []
    for obj in objects:
        if inspect.ismodule(obj) or inspect.isfunction(obj):
            members = vars(obj).values() if inspect.ismodule(obj) else [obj]
            found.extend(getattr(m, _MARK) for m in members if isinstance(getattr(m, _MARK, None), PythonTool))
            continue
        for attr, member in vars(type(obj)).items():
            tool = getattr(member, _MARK, None)
            if isinstance(tool, PythonTool):
                found.append(replace(tool, function=getattr(obj, attr)))
    return found


class PythonToolProvider:
    """Tools from Python functions (decorated with `python_tool`)."""

    def __init__(self, tools: Sequence[PythonTool], *, name: str = "python", max_threads: int = 16) -> None:
        self.name = name
        # Blocking tools run on this provider's own threads: one that hangs past its time-out keeps a thread,
        # but never the pool the rest of the service (its ledger, its bus) runs blocking work on.
        self._max_threads = max_threads
        self._threads = self._pool()
        self._tools = {t.declaration.name: t for t in tools}
        if len(self._tools) != len(tools):
            names = [t.declaration.name for t in tools]
            raise ValueError(f"{name}: two tools share a name: {sorted({n for n in names if names.count(n) > 1})}")

    @classmethod
    def from_modules(cls, modules: Sequence[str]) -> PythonToolProvider:
        """Import modules by path (`acme_tools`, `acme.tools.billing`) and take every tool declared in them."""
        tools: list[PythonTool] = []
        for path in modules:
            try:
                module = importlib.import_module(path)
            except ImportError as exc:
                raise ToolError(
                    "TOOL_MODULE_NOT_FOUND",
                    f"cannot import tool module {path!r} ({exc}); install the package or put it on PYTHONPATH",
                ) from exc
            # A module holding state (a connection) offers `baton_tools()`, returning its tools; else its functions.
            factory = getattr(module, "baton_tools", None)
            declared = list(factory()) if callable(factory) else tools_of(module)
            if not declared:
                raise ToolError(
                    "NO_TOOLS_IN_MODULE", f"module {path!r} declares no tool: decorate functions with @python_tool"
                )
            tools.extend(declared)
        return cls(tools, name="python:" + ",".join(modules))

    async def start(self) -> None:
        return None

    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._max_threads, thread_name_prefix=f"tools-{self.name}")

    async def close(self) -> None:
        # A fresh (thread-less until used) pool in its place: a provider can be started again after close.
        old, self._threads = self._threads, self._pool()
        old.shutdown(wait=False, cancel_futures=True)

    async def declarations(self) -> Sequence[ToolDeclaration]:
        return [t.declaration for t in self._tools.values()]

    async def invoke(self, call: ToolCall) -> Any:
        tool = self._tools.get(call.tool)
        if tool is None:
            raise ToolError("UNKNOWN_TOOL", f"{self.name} has no tool {call.tool!r}; it has {sorted(self._tools)}")
        return await tool(call, self._threads)
