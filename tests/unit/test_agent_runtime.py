"""The agent runtime with the scripted model on a real world database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from baton.agent import StepOutcome, run_step
from baton.contracts.models import FailureClass
from baton.ledger import Ledger
from baton.model import ScriptedModel
from baton.workflows import load_workflows
from baton_demo.faults import Fault, FaultInjectingModel, FaultPlan
from baton_demo.world import World
from tests.harness.world_tools import step_tools

WORKFLOWS = load_workflows()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "world.db")
    w.seed(customers=50, seed=3)
    yield w
    w.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


async def _step(
    world: World,
    ledger: Ledger,
    workflow: str,
    agent: str,
    context: Mapping[str, Any],
    fault: Fault | None = None,
    attempt: int = 1,
    tenant: str | None = None,
) -> StepOutcome:
    plan = FaultPlan({"wf": (agent, fault)} if fault else {})
    owned = "customer_id" if "customer_id" in context else "ticket_id"
    tenant = tenant or world.tenant_of(owned, context[owned]) or "nobody"

    tools = await step_tools(world, ledger, workflow_id="wf", agent=agent, tenant=tenant)
    spec = WORKFLOWS[workflow]
    return await run_step(
        workflow=spec,
        agent=spec.agent(agent),
        workflow_id="wf",
        context=context,
        model=FaultInjectingModel(ScriptedModel(seed=1), plan),
        tools=tools,
        attempt=attempt,
    )


async def test_a_step_calls_its_tools_and_produces_its_outputs(world: World, ledger: Ledger) -> None:
    out = await _step(world, ledger, "customer_onboarding", "identity_verification", {"customer_id": "cust-00001"})
    assert out.succeeded and out.context is not None
    assert out.context["customer"]["id"] == "cust-00001" and out.context["identity"]["verified"] is True
    assert out.tool_calls == 2 and out.tokens > 0
    assert [d.tool_selected for d in out.decisions] == ["lookup_customer", "verify_identity", None]
    assert out.decisions[-1].output_context_sha256 is not None


@pytest.mark.parametrize(
    ("fault", "code", "cls"),
    [
        (Fault.LOOP, "LOOP_DETECTED", FailureClass.LOGIC),
        (Fault.UNKNOWN_TOOL, "UNKNOWN_TOOL", FailureClass.LOGIC),
        (Fault.LOW_CONFIDENCE, "LOW_CONFIDENCE", FailureClass.LOGIC),
        (Fault.MALFORMED, "MALFORMED_MODEL_OUTPUT", FailureClass.LOGIC),
        (Fault.RATE_LIMIT, "RATE_LIMITED", FailureClass.TRANSIENT),
    ],
)
async def test_model_faults_become_classified_failures(
    world: World, ledger: Ledger, fault: Fault, code: str, cls: FailureClass
) -> None:
    out = await _step(
        world, ledger, "customer_onboarding", "identity_verification", {"customer_id": "cust-00001"}, fault
    )
    assert not out.succeeded
    assert (out.error_code, out.failure_class) == (code, cls)
    assert out.error


async def test_a_loop_is_cut_by_the_runtime_not_the_prompt(world: World, ledger: Ledger) -> None:
    out = await _step(world, ledger, "support_refund", "ticket_lookup", {"ticket_id": "tkt-00002"}, Fault.LOOP)
    assert out.error_code == "LOOP_DETECTED"
    assert out.tool_calls == WORKFLOWS["support_refund"].budgets.loop_threshold


async def test_faults_fire_on_the_first_attempt_only(world: World, ledger: Ledger) -> None:
    out = await _step(
        world, ledger, "support_refund", "ticket_lookup", {"ticket_id": "tkt-00002"}, Fault.LOOP, attempt=2
    )
    assert out.succeeded


async def test_irreversible_tools_over_the_threshold_wait_for_approval(world: World, ledger: Ledger) -> None:
    tickets = world.ticket_ids()
    big = next(t for t in tickets if world.preview_refund(t)["amount"] > 500)
    out = await _step(
        world,
        ledger,
        "support_refund",
        "refund_issuer",
        {"ticket_id": big, "refund_preview": world.preview_refund(big)},
    )
    assert out.error_code == "APPROVAL_REQUIRED" and out.failure_class is None
    assert world.verify().counts["refunds"] == 0


async def test_an_irreversible_tool_acts_once_however_often_the_step_runs(world: World, ledger: Ledger) -> None:
    small = next(t for t in world.ticket_ids() if 0 < world.preview_refund(t)["amount"] <= 500)
    ctx = {"ticket_id": small, "refund_preview": world.preview_refund(small)}
    first = await _step(world, ledger, "support_refund", "refund_issuer", ctx)
    again = await _step(world, ledger, "support_refund", "refund_issuer", ctx, attempt=2)
    assert first.succeeded and again.succeeded
    assert first.context is not None and again.context is not None
    assert first.context["refund"] == again.context["refund"]
    report = world.verify()
    # The second run was answered from Baton's ledger: the world never saw the call again.
    assert report.ok and report.counts["refunds"] == 1 and report.counts["tool_calls_repeated"] == 0
    assert ledger.verify().counts["tool_calls_replayed"] == 1


def test_the_world_detects_a_corrupted_record(world: World) -> None:
    assert world.verify().ok
    world._db.execute("UPDATE orders SET amount = amount + 1 WHERE id = 'ord-00003'")
    problems = world.verify().problems
    assert problems == ["orders row ord-00003 does not match its checksum (corrupted)"]


@pytest.mark.parametrize(("level", "needs"), [(1, True), (2, True), (3, False), (4, False)])
def test_autonomy_level_decides_which_calls_wait_for_a_human(level: int, needs: bool) -> None:
    spec = WORKFLOWS["support_refund"].model_copy(update={"autonomy_level": level})
    issue = spec.agent("refund_issuer").tool("issue_refund")
    assert issue is not None
    assert spec.needs_approval(issue, {"amount": 10}) is needs
    assert spec.needs_approval(issue, {"amount": 900}) is True
    lookup = spec.agent("ticket_lookup").tool("lookup_ticket")
    assert lookup is not None and spec.needs_approval(lookup, {}) is False
