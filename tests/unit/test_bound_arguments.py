"""Tool arguments bound to the verified context, and a world whose records belong to tenants."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from baton.agent import StepOutcome, bind_arguments, run_step
from baton.contracts.models import FailureClass, PermissionTier
from baton.ledger import Ledger
from baton.model import ScriptedModel
from baton.tools import ToolError
from baton.workflows import ToolSpec, load_workflows
from baton_demo.faults import Fault, FaultInjectingModel, FaultPlan
from baton_demo.world import World, WorldSchemaError, seeded_tenant
from tests.harness.world_tools import step_tools, world_registry

WORKFLOWS = load_workflows()
REFUND = WORKFLOWS["support_refund"]
ONBOARDING = WORKFLOWS["customer_onboarding"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "world.db")
    w.seed(customers=60, seed=3)
    yield w
    w.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


async def _call(world: World, tool: str, arguments: Mapping[str, Any], tenant: str) -> dict[str, Any]:
    registry = await world_registry(world)
    return await registry.invoke(tool, arguments, idempotency_key="k", tenant_id=tenant, workflow_id="wf")


def _rows(world: World) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the world's business tables, to prove a refused call changed none."""
    with world._lock:
        return {
            t: [tuple(r) for r in world._db.execute(f"SELECT * FROM {t} ORDER BY id")]
            for t in ("customers", "documents", "orders", "tickets", "filings", "refunds")
        }


async def _step(
    world: World, ledger: Ledger, agent: str, context: Mapping[str, Any], fault: Fault | None = None
) -> StepOutcome:
    spec = REFUND if agent in {a.name for a in REFUND.agents} else ONBOARDING
    owned = "customer_id" if "customer_id" in context else "ticket_id"
    tenant = world.tenant_of(owned, context[owned])
    assert tenant is not None

    tools = await step_tools(world, ledger, workflow_id="wf", agent=agent, tenant=tenant)
    return await run_step(
        workflow=spec,
        agent=spec.agent(agent),
        workflow_id="wf",
        context=context,
        model=FaultInjectingModel(ScriptedModel(), FaultPlan({"wf": (agent, fault)} if fault else {})),
        tools=tools,
    )


def _refund_context(world: World, *, big: bool) -> dict[str, Any]:
    for t in world.ticket_ids():
        amount = world.preview_refund(t)["amount"]
        if (amount > 500) if big else (50 < amount <= 500):
            return {"ticket_id": t, "refund_preview": world.preview_refund(t)}
    raise AssertionError("the seeded world has no such ticket")


# -- binding, as a pure function ---------------------------------------------------------------------

ISSUE = ToolSpec(
    name="issue_refund",
    tier=PermissionTier.IRREVERSIBLE,
    args={"ticket_id": "ticket_id", "amount": "refund_preview.amount"},
    result_key="refund",
)
CONTEXT = {"ticket_id": "tkt-00007", "refund_preview": {"amount": 900.0}}


def test_the_bound_values_are_what_runs_and_a_difference_is_named() -> None:
    call = bind_arguments(ISSUE, CONTEXT, {"ticket_id": "tkt-00007", "amount": 90})
    assert call.arguments == {"ticket_id": "tkt-00007", "amount": 900.0}
    assert call.differing == ["amount: the model chose 90, the context (refund_preview.amount) says 900.0"]
    # The same JSON number is no difference; a string for a number is.
    assert not bind_arguments(ISSUE, CONTEXT, {"ticket_id": "tkt-00007", "amount": 900}).diverged
    assert bind_arguments(ISSUE, CONTEXT, {"ticket_id": "tkt-00007", "amount": "900"}).differing


def test_an_omitted_argument_is_filled_in_and_an_unbound_one_is_refused_on_a_write() -> None:
    call = bind_arguments(ISSUE, CONTEXT, {"ticket_id": "tkt-00007", "note": "goodwill"})
    assert call.arguments == {"ticket_id": "tkt-00007", "amount": 900.0}
    assert call.unbound == ["note: 'goodwill' is not bound to the context"] and not call.differing


def test_a_read_runs_the_bound_values_plus_the_models_unbound_arguments() -> None:
    read = ISSUE.model_copy(update={"tier": PermissionTier.READ})
    call = bind_arguments(read, CONTEXT, {"ticket_id": "tkt-00008", "page": 2})
    assert call.arguments == {"ticket_id": "tkt-00007", "amount": 900.0, "page": 2}
    assert call.differing and not call.unbound


def test_a_binding_that_resolves_to_nothing_names_argument_and_path() -> None:
    call = bind_arguments(ISSUE, {"ticket_id": "tkt-00007"}, {})
    assert call.unresolved == ["amount (bound to context path 'refund_preview.amount')"]


# -- the runtime ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.OTHER_RECORD, Fault.UNDERSTATE])
async def test_a_write_with_the_models_own_values_is_refused_and_nothing_is_written(
    world: World, ledger: Ledger, fault: Fault
) -> None:
    ctx = _refund_context(world, big=False)
    before = _rows(world)
    out = await _step(world, ledger, "refund_issuer", ctx, fault)
    assert (out.error_code, out.failure_class) == ("ARGUMENT_NOT_BOUND", FailureClass.LOGIC)
    assert out.error is not None and "the model chose" in out.error and "nothing ran" in out.error
    assert out.tool_calls == 0 and out.context is None
    assert _rows(world) == before and world.verify().ok


async def test_an_irreversible_filing_for_another_customer_is_refused(world: World, ledger: Ledger) -> None:
    ctx = {"customer_id": "cust-00004", "compliance": {"risk_score": 20}}
    out = await _step(world, ledger, "regulatory_filing", ctx, Fault.OTHER_RECORD)
    assert out.error_code == "ARGUMENT_NOT_BOUND"
    assert out.error is not None and "'cust-00005'" in out.error and "'cust-00004'" in out.error
    assert world.verify().counts["filings"] == 0


async def test_approval_is_decided_on_the_bound_amount_not_the_models_claim(world: World, ledger: Ledger) -> None:
    ctx = _refund_context(world, big=True)
    out = await _step(world, ledger, "refund_issuer", ctx, Fault.UNDERSTATE)  # the model claims a tenth: under 500
    assert (out.error_code, out.failure_class) == ("APPROVAL_REQUIRED", None)
    assert out.error is not None and "the model proposed otherwise" in out.error
    assert world.verify().counts["refunds"] == 0


async def test_a_read_runs_on_the_bound_values_and_the_divergence_is_on_record(world: World, ledger: Ledger) -> None:
    out = await _step(world, ledger, "identity_verification", {"customer_id": "cust-00003"}, Fault.OTHER_RECORD)
    assert out.succeeded and out.context is not None
    assert out.context["customer"]["id"] == "cust-00003"
    assert "[rebound: customer_id: the model chose 'cust-00004'" in out.decisions[0].rationale


async def test_a_binding_missing_from_the_context_fails_the_step_before_any_tool(world: World, ledger: Ledger) -> None:
    out = await _step(world, ledger, "refund_issuer", {"ticket_id": "tkt-00001", "refund_preview": {"currency": "EUR"}})
    assert out.error_code == "ARGUMENT_UNRESOLVED" and out.tool_calls == 0
    assert out.error is not None and "refund_preview.amount" in out.error and "amount" in out.error


# -- the tenant-owned world -----------------------------------------------------------------------------


def test_seeded_records_belong_to_the_tenant_the_demo_submits_under(world: World) -> None:
    assert world.tenant_of("customer_id", "cust-00007") == seeded_tenant(7) == "tenant-1"
    assert world.tenant_of("ticket_id", "tkt-00008") == seeded_tenant(8)
    assert world.tenant_of("customer_id", "cust-99999") is None


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("lookup_customer", {"customer_id": "cust-00001"}),
        ("lookup_order", {"ticket_id": "tkt-00001"}),
        ("issue_refund", {"ticket_id": "tkt-00001", "amount": 1.0}),
        ("file_regulatory_report", {"customer_id": "cust-00001", "risk_score": 10}),
    ],
)
async def test_a_tenant_cannot_touch_another_tenants_rows(world: World, tool: str, arguments: dict[str, Any]) -> None:
    before = _rows(world)
    with pytest.raises(ToolError, match="a record of another tenant") as refused:
        await _call(world, tool, arguments, seeded_tenant(2))
    assert refused.value.code == "TENANT_MISMATCH"
    assert _rows(world) == before and world.verify().ok
    assert await _call(world, tool, arguments, seeded_tenant(1))  # the owner may


async def test_a_call_naming_no_record_of_a_tenant_does_not_run(world: World) -> None:
    before = _rows(world)
    with pytest.raises(ToolError, match="customer_id: required, missing") as refused:
        await _call(world, "lookup_customer", {"name": "Customer 1"}, seeded_tenant(1))
    assert refused.value.code == "BAD_ARGUMENTS"
    with pytest.raises(ToolError, match="no tool 'drop_tables'") as unknown:
        await _call(world, "drop_tables", {}, seeded_tenant(1))
    assert unknown.value.code == "UNKNOWN_TOOL" and _rows(world) == before


def test_a_records_owner_is_under_its_checksum(world: World) -> None:
    world._db.execute("UPDATE customers SET tenant_id = 'tenant-evil' WHERE id = 'cust-00003'")
    assert world.verify().problems == ["customers row cust-00003 does not match its checksum (corrupted)"]


def test_a_world_made_before_tenants_is_refused_with_the_fix(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT, country TEXT, risk_score INT, checksum TEXT)")
    db.close()
    with pytest.raises(WorldSchemaError, match="delete it and seed a new world"):
        World(tmp_path / "old.db")


def test_a_workflow_keeps_the_tenant_its_first_step_came_with(ledger: Ledger) -> None:
    assert ledger.workflow_tenant("wf-1", "tenant-0") == "tenant-0"
    assert ledger.workflow_tenant("wf-1", "tenant-1") == "tenant-0"
    assert ledger.workflow_tenant("wf-2", "tenant-1") == "tenant-1"
