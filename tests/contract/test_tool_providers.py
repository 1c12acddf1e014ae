"""One contract for every kind of tool provider, run through the ToolRegistry against real servers.

Kinds: Python functions in this process; an HTTP service (Starlette on uvicorn); an MCP server (MCPServer
from the SDK) run as a stdio subprocess and served over streamable HTTP by uvicorn. Each serves the same
tool set (tests.contract.tool_kit) and writes its effects to a file, read here.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from baton.agent import run_step
from baton.contracts.models import FailureClass, PermissionTier
from baton.ledger import Ledger
from baton.model import ScriptedModel
from baton.tools import PythonToolProvider, ToolError, ToolProvider, ToolRegistry, tools_of
from baton.tools.executor import StepTools
from baton.tools.http import HttpAuth, HttpToolConfig, HttpToolProvider
from baton.tools.mcp import McpServerConfig, McpToolProvider
from baton.workflows import AgentSpec, Escalation, ToolSpec, WorkflowSpec
from tests.contract.mcp_tool_server import SERVER_VERSION, build_server
from tests.contract.tool_kit import (
    HUGE_BYTES,
    INVOICE_AMOUNT,
    MAX_RESULT_BYTES,
    SLOW_S,
    TIMEOUT_S,
    TOOL_NAMES,
    EffectLog,
    PythonKit,
    free_port,
    http_app,
    http_tools,
    serve,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ["python", "http", "mcp-stdio", "mcp-http"]
CALL: dict[str, Any] = {"tenant_id": "acme", "workflow_id": "wf-1", "agent": "payer"}


@dataclass
class Served:
    """One kind of provider, started behind a registry, with the effect log its tools write."""

    kind: str
    registry: ToolRegistry
    effects: EffectLog


def mcp_config(transport: str, effects: EffectLog, url: str = "", **overrides: Any) -> McpServerConfig:
    common: dict[str, Any] = {
        "server": "payments",
        "idempotent": ["lookup", "record_payment"],
        "timeout_s": 10,
        "timeouts": {"slow": TIMEOUT_S},
        "max_result_bytes": MAX_RESULT_BYTES,
    }
    if transport == "stdio":
        target: dict[str, Any] = {
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "tests.contract.mcp_tool_server", str(effects.path)],
            "cwd": str(REPO_ROOT),
        }
    else:
        target = {"transport": "streamable-http", "url": url}
    return McpServerConfig.model_validate(common | target | overrides)


@pytest.fixture(scope="module")
async def http_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, EffectLog]]:
    effects = EffectLog(tmp_path_factory.mktemp("http") / "effects.jsonl")
    async with serve(http_app(effects)) as url:
        yield url, effects


@pytest.fixture(scope="module")
async def mcp_http_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, EffectLog]]:
    effects = EffectLog(tmp_path_factory.mktemp("mcp-http") / "effects.jsonl")
    async with serve(build_server(effects).streamable_http_app()) as url:
        yield f"{url}/mcp", effects


@pytest.fixture(scope="module", params=KINDS)
async def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    http_service: tuple[str, EffectLog],
    mcp_http_service: tuple[str, EffectLog],
) -> AsyncIterator[Served]:
    """Each kind in turn (the two in-process services are cheap, so every kind asks for both)."""
    kind: str = request.param
    provider: ToolProvider
    if kind == "python":
        effects = EffectLog(tmp_path_factory.mktemp("python") / "effects.jsonl")
        provider = PythonToolProvider(tools_of(PythonKit(effects)))
    elif kind == "http":
        url, effects = http_service
        provider = HttpToolProvider(http_tools(url))
    elif kind == "mcp-stdio":
        effects = EffectLog(tmp_path_factory.mktemp("mcp-stdio") / "effects.jsonl")
        provider = McpToolProvider(mcp_config("stdio", effects))
    else:
        url, effects = mcp_http_service
        provider = McpToolProvider(mcp_config("streamable-http", effects, url))
    registry = ToolRegistry([provider])
    await registry.start()
    yield Served(kind, registry, effects)
    await registry.close()


async def call(served: Served, tool: str, arguments: dict[str, Any], key: str = "k-1") -> dict[str, Any]:
    return await served.registry.invoke(tool, arguments, idempotency_key=key, **CALL)


# --- the contract: every kind ---------------------------------------------------------------------------


async def test_every_tool_is_declared_with_its_schemas(served: Served) -> None:
    declared = {d.name: d for d in served.registry.declarations()}
    assert set(declared) >= TOOL_NAMES
    lookup, pay = declared["lookup"], declared["record_payment"]
    assert lookup.parameters["required"] == ["invoice_id"]
    assert lookup.parameters["properties"]["invoice_id"]["type"] == "string"
    assert set(pay.parameters["required"]) == {"invoice_id", "amount"}
    assert pay.idempotent and not declared["slow"].idempotent
    assert declared["slow"].timeout_s == TIMEOUT_S
    assert declared["huge_result"].max_result_bytes == MAX_RESULT_BYTES
    assert declared["bad_result"].returns["properties"]["ok"]["type"] == "boolean"
    if served.kind.startswith("mcp"):
        # MCP carries no tiers: the workflow declaration assigns them; the version is the server's own.
        assert {d.tier for d in declared.values()} == {None}
        assert lookup.version == SERVER_VERSION
    else:
        assert lookup.tier is PermissionTier.READ and pay.tier is PermissionTier.WRITE


async def test_a_valid_call_returns_its_result(served: Served) -> None:
    assert await call(served, "lookup", {"invoice_id": "inv-7"}) == {"invoice_id": "inv-7", "amount": INVOICE_AMOUNT}


async def test_a_write_runs_once_and_receives_the_idempotency_key(served: Served) -> None:
    before = len(served.effects.read())
    result = await call(served, "record_payment", {"invoice_id": "inv-7", "amount": 120.5}, key="wf-1/step-3/pay")
    # Every kind carries the key: Python via ToolContext, HTTP via Idempotency-Key, MCP via the call's _meta.
    assert result["key"] == "wf-1/step-3/pay"
    effects = served.effects.read()
    assert len(effects) == before + 1
    expected = {"payment_id": result["payment_id"], "invoice_id": "inv-7", "amount": 120.5, "key": "wf-1/step-3/pay"}
    assert effects[-1] == expected


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"invoice_id": 7, "amount": 10.0}, "invoice_id"),  # wrong type
        ({"invoice_id": "inv-7"}, "amount"),  # missing required field
        ({"invoice_id": "inv-7", "amount": "ten"}, "amount"),
    ],
)
async def test_arguments_off_the_schema_are_refused_and_nothing_runs(
    served: Served, arguments: dict[str, Any], field: str
) -> None:
    before = len(served.effects.read())
    with pytest.raises(ToolError) as caught:
        await call(served, "record_payment", arguments)
    assert caught.value.code == "BAD_ARGUMENTS"
    assert caught.value.failure_class is FailureClass.LOGIC
    assert field in str(caught.value) and "nothing ran" in str(caught.value)
    assert len(served.effects.read()) == before


async def test_an_unknown_tool_is_refused_and_nothing_runs(served: Served) -> None:
    before = len(served.effects.read())
    with pytest.raises(ToolError) as caught:
        await call(served, "record_refund", {"invoice_id": "inv-7"})
    assert (caught.value.code, caught.value.failure_class) == ("UNKNOWN_TOOL", FailureClass.LOGIC)
    assert "record_refund" in str(caught.value)
    assert len(served.effects.read()) == before


async def test_a_slow_tool_times_out_as_transient(served: Served) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError) as caught:
        await call(served, "slow", {})
    assert (caught.value.code, caught.value.failure_class) == ("TIMEOUT", FailureClass.TRANSIENT)
    assert time.monotonic() - started < SLOW_S  # the caller was released, not kept until the tool ended


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the Python tool lies about its type
async def test_a_result_off_its_schema_is_refused(served: Served) -> None:
    with pytest.raises(ToolError) as caught:
        await call(served, "bad_result", {})
    assert (caught.value.code, caught.value.failure_class) == ("BAD_RESULT", FailureClass.LOGIC)
    assert "ok" in str(caught.value)


async def test_a_result_over_its_size_bound_is_refused(served: Served) -> None:
    with pytest.raises(ToolError) as caught:
        await call(served, "huge_result", {})
    assert caught.value.code == "RESULT_TOO_LARGE"
    assert str(MAX_RESULT_BYTES) in str(caught.value)


async def test_concurrent_calls_each_get_their_own_answer(served: Served) -> None:
    before = len(served.effects.read())
    keys = [f"wf-1/step-{i}" for i in range(8)]
    writes = [
        call(served, "record_payment", {"invoice_id": f"inv-{i}", "amount": float(i)}, key=k)
        for i, k in enumerate(keys)
    ]
    results = await asyncio.gather(*writes, call(served, "lookup", {"invoice_id": "inv-0"}))
    assert [r["key"] for r in results[:-1]] == keys
    assert results[-1]["invoice_id"] == "inv-0"
    assert sorted(e["key"] for e in served.effects.read()[before:]) == sorted(keys)


# --- HTTP: failures, auth -------------------------------------------------------------------------------


def endpoint(url: str, name: str = "probe", **fields: Any) -> HttpToolConfig:
    return HttpToolConfig.model_validate(
        {"name": name, "version": "1", "url": url, "parameters": {"type": "object"}, "timeout_s": 5} | fields
    )


async def invoke_http(tool: HttpToolConfig) -> dict[str, Any]:
    registry = ToolRegistry([HttpToolProvider([tool])])
    await registry.start()
    try:
        return await registry.invoke(tool.name, {}, idempotency_key="k-1", **CALL)
    finally:
        await registry.close()


@pytest.mark.parametrize(
    ("path", "code", "failure_class"),
    [
        ("/status/500", "HTTP_500", FailureClass.TRANSIENT),
        ("/status/503", "HTTP_503", FailureClass.TRANSIENT),
        ("/status/429", "RATE_LIMITED", FailureClass.TRANSIENT),
        ("/status/404", "HTTP_404", FailureClass.LOGIC),
        ("/status/422", "HTTP_422", FailureClass.LOGIC),
        ("/not-json", "BAD_RESULT", FailureClass.LOGIC),
    ],
)
async def test_http_failures_map_to_their_class(
    http_service: tuple[str, EffectLog], path: str, code: str, failure_class: FailureClass
) -> None:
    url = http_service[0] + path
    with pytest.raises(ToolError) as caught:
        await invoke_http(endpoint(url))
    assert (caught.value.code, caught.value.failure_class) == (code, failure_class)
    assert "probe" in str(caught.value) and url in str(caught.value)
    if failure_class is FailureClass.LOGIC and code.startswith("HTTP_"):
        assert "failed on purpose" in str(caught.value)  # the body excerpt says what the server said


async def test_http_unreachable_is_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}/tools/lookup"
    with pytest.raises(ToolError) as caught:
        await invoke_http(endpoint(url))
    assert (caught.value.code, caught.value.failure_class) == ("UNREACHABLE", FailureClass.TRANSIENT)
    assert url in str(caught.value)


async def test_http_missing_secret_fails_the_start_naming_the_variable(
    http_service: tuple[str, EffectLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATON_TEST_PO_TOKEN", raising=False)
    auth = HttpAuth(header="Authorization", secret_env="BATON_TEST_PO_TOKEN", prefix="Bearer ")
    registry = ToolRegistry([HttpToolProvider(http_tools(http_service[0], auth=auth))])
    with pytest.raises(ToolError) as caught:
        await registry.start()
    assert caught.value.code == "MISSING_SECRET"
    assert "BATON_TEST_PO_TOKEN" in str(caught.value)
    await registry.close()


async def test_http_sends_auth_and_call_headers(
    http_service: tuple[str, EffectLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = http_service
    monkeypatch.setenv("BATON_TEST_PO_TOKEN", "s3cret")
    auth = HttpAuth(header="Authorization", secret_env="BATON_TEST_PO_TOKEN", prefix="Bearer ")
    registry = ToolRegistry([HttpToolProvider(http_tools(url, auth=auth))])
    await registry.start()
    try:
        await registry.invoke("lookup", {"invoice_id": "inv-1"}, idempotency_key="wf-1/step-1", **CALL)
    finally:
        await registry.close()
    async with httpx.AsyncClient() as client:
        seen = (await client.get(f"{url}/seen")).json()
    assert seen["authorization"] == "Bearer s3cret"
    sent = (seen["idempotency-key"], seen["x-baton-tenant"], seen["x-baton-workflow"])
    assert sent == ("wf-1/step-1", "acme", "wf-1")


# --- MCP: unreachable servers, a session that dies ------------------------------------------------------


async def test_mcp_command_that_does_not_exist_is_unreachable(tmp_path: Path) -> None:
    config = McpServerConfig(server="ghost", command=str(tmp_path / "no-such-server"), version="1")
    with pytest.raises(ToolError) as caught:
        await McpToolProvider(config).start()
    assert (caught.value.code, caught.value.failure_class) == ("UNREACHABLE", FailureClass.TRANSIENT)
    assert "no-such-server" in str(caught.value)


async def test_mcp_command_that_exits_at_once_is_unreachable() -> None:
    config = McpServerConfig(server="quitter", command=sys.executable, args=["-c", "raise SystemExit(2)"])
    with pytest.raises(ToolError) as caught:
        await McpToolProvider(config).start()
    assert (caught.value.code, caught.value.failure_class) == ("UNREACHABLE", FailureClass.TRANSIENT)


async def test_mcp_url_with_nothing_listening_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    config = McpServerConfig(server="ghost", transport="streamable-http", url=url, version="1")
    with pytest.raises(ToolError) as caught:
        await McpToolProvider(config).start()
    assert (caught.value.code, caught.value.failure_class) == ("UNREACHABLE", FailureClass.TRANSIENT)
    assert url in str(caught.value)


async def test_mcp_session_that_dies_is_reopened_once(tmp_path: Path) -> None:
    effects = EffectLog(tmp_path / "effects.jsonl")
    provider = McpToolProvider(mcp_config("stdio", effects, version="7"))
    registry = ToolRegistry([provider])
    await registry.start()
    try:
        assert registry.declaration("lookup").version == "7"  # the pack's pin wins over serverInfo
        with pytest.raises(ToolError) as caught:
            await call(Served("mcp-stdio", registry, effects), "exit_process", {})
        # Not idempotent: it may have run, so it is not re-sent; the next call gets a fresh session.
        assert (caught.value.code, caught.value.failure_class) == ("CONNECTION_LOST", FailureClass.TRANSIENT)
        assert "not re-sent" in str(caught.value)
        served = Served("mcp-stdio", registry, effects)
        assert (await call(served, "lookup", {"invoice_id": "inv-2"}))["invoice_id"] == "inv-2"
    finally:
        await registry.close()


async def test_mcp_idempotent_call_lost_with_its_session_is_resent_once(tmp_path: Path) -> None:
    effects = EffectLog(tmp_path / "effects.jsonl")
    idempotent = ["lookup", "record_payment", "crash_once", "exit_process"]
    registry = ToolRegistry([McpToolProvider(mcp_config("stdio", effects, idempotent=idempotent))])
    await registry.start()
    served = Served("mcp-stdio", registry, effects)
    try:
        # The first server process dies mid-call; the call is re-sent once, on a fresh session, and answered.
        assert await call(served, "crash_once", {}) == {"survived": True}
        # A call that kills every session it reaches is re-sent once only, then reported.
        with pytest.raises(ToolError) as caught:
            await call(served, "exit_process", {})
        assert (caught.value.code, caught.value.failure_class) == ("CONNECTION_LOST", FailureClass.TRANSIENT)
        assert "dropped again" in str(caught.value)
    finally:
        await registry.close()


async def test_mcp_http_server_gone_mid_run_is_unreachable(tmp_path: Path) -> None:
    effects = EffectLog(tmp_path / "effects.jsonl")
    async with serve(build_server(effects).streamable_http_app()) as url:
        registry = ToolRegistry([McpToolProvider(mcp_config("streamable-http", effects, f"{url}/mcp"))])
        await registry.start()
        served = Served("mcp-http", registry, effects)
        assert (await call(served, "lookup", {"invoice_id": "inv-4"}))["invoice_id"] == "inv-4"
    try:
        with pytest.raises(ToolError) as caught:
            await call(served, "lookup", {"invoice_id": "inv-4"})
        assert (caught.value.code, caught.value.failure_class) == ("UNREACHABLE", FailureClass.TRANSIENT)
        assert url in str(caught.value)
    finally:
        await registry.close()


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
async def test_mcp_provider_started_and_closed_from_different_tasks(
    transport: str, tmp_path: Path, mcp_http_service: tuple[str, EffectLog]
) -> None:
    effects = EffectLog(tmp_path / "effects.jsonl") if transport == "stdio" else mcp_http_service[1]
    provider = McpToolProvider(mcp_config(transport, effects, mcp_http_service[0]))
    registry = ToolRegistry([provider])
    # Each step in a task of its own, as a service's startup, handlers and shutdown are.
    await asyncio.create_task(registry.start())
    # Five tools at two per page: the whole listing means the cursors were followed.
    extra = {"exit_process", "crash_once"} if transport == "stdio" else set()
    assert {d.name for d in registry.declarations()} == TOOL_NAMES | extra
    answer = await asyncio.create_task(call(Served(transport, registry, effects), "lookup", {"invoice_id": "inv-3"}))
    assert answer["invoice_id"] == "inv-3"
    await asyncio.create_task(registry.close())
    await registry.close()  # a second close is harmless


async def test_mcp_pack_naming_an_idempotent_tool_the_server_lacks_is_refused(tmp_path: Path) -> None:
    effects = EffectLog(tmp_path / "effects.jsonl")
    provider = McpToolProvider(mcp_config("stdio", effects, idempotent=["record_payments"]))
    with pytest.raises(ToolError) as caught:
        await provider.start()
    assert caught.value.code == "UNKNOWN_TOOL" and "record_payments" in str(caught.value)
    assert "idempotent" in str(caught.value)
    await provider.close()


def test_huge_result_is_really_over_the_bound() -> None:
    assert HUGE_BYTES > MAX_RESULT_BYTES  # the huge_result tests mean something


# --- through the agent runtime: a re-run step acts once, whatever the tool ---------------------------------

PAYER = AgentSpec(
    name="payer",
    outputs=["payment"],
    tools=[
        ToolSpec(
            name="record_payment",
            version="1",
            tier=PermissionTier.WRITE,
            args={"invoice_id": "invoice_id", "amount": "amount"},
            result_key="payment",
        )
    ],
)
PAYING = WorkflowSpec(
    name="paying", pattern="pipeline", autonomy_level=4, agents=[PAYER], escalation=Escalation(queue="ap")
)


async def test_a_write_of_a_step_run_twice_has_one_effect(served: Served, tmp_path: Path) -> None:
    """The first run died after paying and before its outcome was stored; the redelivered step runs again
    (model included) and reaches the same key: Baton's ledger answers, the tool is not called again."""
    ledger = Ledger(tmp_path / f"ledger-{served.kind}.db")
    before = len(served.effects.read())
    runs = []
    for _ in range(2):
        tools = StepTools(
            served.registry, ledger, workflow_id="wf-pay", agent="payer", tenant_id="acme", step_version=2
        )
        runs.append(
            await run_step(
                workflow=PAYING,
                agent=PAYER,
                workflow_id="wf-pay",
                context={"invoice_id": "inv-9", "amount": 42.0},
                model=ScriptedModel(),
                tools=tools,
            )
        )
    assert all(r.succeeded and r.context is not None for r in runs)
    first, again = (r.context["payment"] for r in runs if r.context is not None)
    assert first == again
    assert len(served.effects.read()) == before + 1
    assert ledger.verify().counts["tool_calls_replayed"] == 1
    ledger.close()


def _one_tool_agent(
    tool: str, tier: PermissionTier = PermissionTier.READ, args: dict[str, str] | None = None
) -> AgentSpec:
    return AgentSpec(
        name="payer", tools=[ToolSpec(name=tool, version="1", tier=tier, args=args or {}, result_key="out")]
    )


async def _step_with(registry: ToolRegistry, agent: AgentSpec, context: dict[str, Any], ledger: Ledger) -> Any:
    workflow = WorkflowSpec(
        name="paying", pattern="pipeline", autonomy_level=4, agents=[agent], escalation=Escalation(queue="ap")
    )
    tools = StepTools(registry, ledger, workflow_id="wf-f", agent="payer", tenant_id="acme", step_version=1)
    return await run_step(
        workflow=workflow, agent=agent, workflow_id="wf-f", context=context, model=ScriptedModel(), tools=tools
    )


@pytest.mark.parametrize(
    ("tool", "context", "args", "code", "failure_class"),
    [
        ("slow", {}, {}, "TOOL_TIMEOUT", FailureClass.TRANSIENT),
        ("bad_result", {}, {}, "TOOL_BAD_RESULT", FailureClass.LOGIC),
        ("huge_result", {}, {}, "TOOL_RESULT_TOO_LARGE", FailureClass.LOGIC),
        ("lookup", {"invoice_id": 7}, {"invoice_id": "invoice_id"}, "TOOL_BAD_ARGUMENTS", FailureClass.LOGIC),
    ],
)
async def test_a_failing_tool_ends_the_step_with_its_class_on_record_and_no_effect(
    served: Served,
    tmp_path: Path,
    tool: str,
    context: dict[str, Any],
    args: dict[str, str],
    code: str,
    failure_class: FailureClass,
) -> None:
    before = len(served.effects.read())
    ledger = Ledger(tmp_path / "ledger.db")
    out = await _step_with(served.registry, _one_tool_agent(tool, args=args), context, ledger)
    ledger.close()
    assert (out.succeeded, out.error_code, out.failure_class) == (False, code, failure_class)
    assert out.error and tool in out.error
    # The decision that chose the tool is on record (the AgentDecision events the audit keeps).
    assert out.decisions[-1].tool_selected == tool and out.tool_calls == 0
    assert len(served.effects.read()) == before


async def test_an_http_tool_answering_500_ends_the_step_as_transient(
    http_service: tuple[str, EffectLog], tmp_path: Path
) -> None:
    registry = ToolRegistry([HttpToolProvider([endpoint(http_service[0] + "/status/500", name="probe")])])
    await registry.start()
    out = await _step_with(registry, _one_tool_agent("probe"), {}, Ledger(tmp_path / "l.db"))
    await registry.close()
    assert (out.error_code, out.failure_class) == ("TOOL_HTTP_500", FailureClass.TRANSIENT)


async def test_an_mcp_server_that_went_down_fails_a_read_as_transient_and_never_retries_a_write_blind(
    tmp_path: Path,
) -> None:
    """The server is gone when the step runs. Whether a request reached it cannot be known from here: a read fails
    as transient (the supervisor retries it later), a write that is not idempotent escalates instead of being
    retried, and nothing was paid."""
    effects = EffectLog(tmp_path / "effects.jsonl")
    async with serve(build_server(effects).streamable_http_app()) as url:
        registry = ToolRegistry([McpToolProvider(mcp_config("streamable-http", effects, f"{url}/mcp", idempotent=[]))])
        await registry.start()
    ledger = Ledger(tmp_path / "l.db")
    read = _one_tool_agent("lookup", args={"invoice_id": "invoice_id"})
    write = _one_tool_agent("record_payment", PermissionTier.WRITE, {"invoice_id": "invoice_id", "amount": "amount"})
    try:
        # The first call finds the session dead mid-request (it may have been sent); the next finds no server.
        paid = await _step_with(registry, write, {"invoice_id": "inv-1", "amount": 5.0}, ledger)
        looked = await _step_with(registry, read, {"invoice_id": "inv-1"}, ledger)
    finally:
        await registry.close()
    assert (paid.error_code, paid.failure_class) == ("TOOL_EFFECT_UNKNOWN", None), paid.error
    # A read is retried later either way (whether the re-opening session was still on its way or found no server).
    assert looked.failure_class is FailureClass.TRANSIENT, looked.error
    assert looked.error_code in {"TOOL_UNREACHABLE", "TOOL_CONNECTION_LOST"}
    assert effects.read() == []
    ledger.close()


async def test_an_http_write_whose_connection_drops_after_sending_acts_once_over_two_attempts(tmp_path: Path) -> None:
    """The server acts, then drops the connection before answering: the call may have acted, so the step
    escalates instead of being retried, and a second attempt does not call the tool again."""
    acted: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_and_drop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            acted.append(conn.recv(65536))  # the effect happens...
            conn.close()  # ...and the answer never comes

    threading.Thread(target=serve_and_drop, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/pay"
    registry = ToolRegistry([HttpToolProvider([endpoint(url, name="pay", tier="WRITE")])])
    await registry.start()
    ledger = Ledger(tmp_path / "l.db")
    agent = _one_tool_agent("pay", PermissionTier.WRITE)
    try:
        outcomes = [await _step_with(registry, agent, {}, ledger) for _ in range(2)]
    finally:
        await registry.close()
        listener.close()
        ledger.close()
    assert [(o.error_code, o.failure_class) for o in outcomes] == [("TOOL_EFFECT_UNKNOWN", None)] * 2
    assert "CONNECTION_LOST" in (outcomes[0].error or "")
    assert len(acted) == 1


async def test_an_mcp_server_registers_only_the_tools_its_pack_uses(tmp_path: Path) -> None:
    effects = EffectLog(tmp_path / "effects.jsonl")
    registry = ToolRegistry([McpToolProvider(mcp_config("stdio", effects, tools=["lookup"]))])
    await registry.start()
    try:
        assert [d.name for d in registry.declarations()] == ["lookup"]
        with pytest.raises(ToolError, match="no tool 'record_payment' in the registry"):
            await call(Served("mcp-stdio", registry, effects), "record_payment", {"invoice_id": "i", "amount": 1.0})
    finally:
        await registry.close()
    unknown = ToolRegistry([McpToolProvider(mcp_config("stdio", effects, tools=["refund"]))])
    with pytest.raises(ToolError, match=r"names \['refund'\] under tools"):
        await unknown.start()
