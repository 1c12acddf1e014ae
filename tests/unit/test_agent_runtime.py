"""The agent runtime with the scripted model on a real world database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from baton.agent import StepOutcome, idempotency_key, run_step
from baton.contracts.models import FailureClass
from baton.model import ScriptedModel
from baton.workflows import load_workflows
from baton_demo.faults import Fault, FaultInjectingModel, FaultPlan
from baton_demo.store import WorldStore
from baton_demo.world import World

WORKFLOWS = load_workflows()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = WorldStore(tmp_path / "world.db")
    w.seed(customers=50, seed=3)
    yield w
    w.close()


async def _step(
    world: World,
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

    async def run_tool(name: str, args: Mapping[str, Any], key: str) -> dict[str, Any]:
        return world.call(name, args, idempotency_key=key, tenant_id=tenant)

    spec = WORKFLOWS[workflow]
    return await run_step(
        workflow=spec,
        agent=spec.agent(agent),
        workflow_id="wf",
        context=context,
        model=FaultInjectingModel(ScriptedModel(seed=1), plan),
        run_tool=run_tool,
        attempt=attempt,
    )


async def test_a_step_calls_its_tools_and_produces_its_outputs(world: World) -> None:
    out = await _step(world, "customer_onboarding", "identity_verification", {"customer_id": "cust-00001"})
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
    world: World, fault: Fault, code: str, cls: FailureClass
) -> None:
    out = await _step(world, "customer_onboarding", "identity_verification", {"customer_id": "cust-00001"}, fault)
    assert not out.succeeded
    assert (out.error_code, out.failure_class) == (code, cls)
    assert out.error


async def test_a_loop_is_cut_by_the_runtime_not_the_prompt(world: World) -> None:
    out = await _step(world, "support_refund", "ticket_lookup", {"ticket_id": "tkt-00002"}, Fault.LOOP)
    assert out.error_code == "LOOP_DETECTED"
    assert out.tool_calls == WORKFLOWS["support_refund"].budgets.loop_threshold


async def test_faults_fire_on_the_first_attempt_only(world: World) -> None:
    out = await _step(world, "support_refund", "ticket_lookup", {"ticket_id": "tkt-00002"}, Fault.LOOP, attempt=2)
    assert out.succeeded


async def test_irreversible_tools_over_the_threshold_wait_for_approval(world: World) -> None:
    tickets = world.ticket_ids()
    big = next(t for t in tickets if world.preview_refund(t)["amount"] > 500)
    out = await _step(
        world, "support_refund", "refund_issuer", {"ticket_id": big, "refund_preview": world.preview_refund(big)}
    )
    assert out.error_code == "APPROVAL_REQUIRED" and out.failure_class is None
    assert world.verify().counts["refunds"] == 0


async def test_an_irreversible_tool_acts_once_however_often_the_step_runs(world: World) -> None:
    small = next(t for t in world.ticket_ids() if 0 < world.preview_refund(t)["amount"] <= 500)
    ctx = {"ticket_id": small, "refund_preview": world.preview_refund(small)}
    first = await _step(world, "support_refund", "refund_issuer", ctx)
    again = await _step(world, "support_refund", "refund_issuer", ctx, attempt=2)
    assert first.succeeded and again.succeeded
    assert first.context is not None and again.context is not None
    assert first.context["refund"] == again.context["refund"]
    report = world.verify()
    assert report.ok and report.counts["refunds"] == 1 and report.counts["tool_calls_repeated"] == 1


def test_idempotency_keys_depend_on_the_call_not_the_attempt() -> None:
    a = idempotency_key("wf", "refund_issuer", "issue_refund", {"amount": 10, "ticket_id": "t"})
    b = idempotency_key("wf", "refund_issuer", "issue_refund", {"ticket_id": "t", "amount": 10.0})
    c = idempotency_key("wf", "refund_issuer", "issue_refund", {"ticket_id": "t", "amount": 11})
    assert a == b != c


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
