"""The supervisor's state machine, event by event."""

from __future__ import annotations

import json

import pytest

from baton.context import make_snapshot
from baton.contracts.models import (
    ContextDiff,
    Envelope,
    FailureClass,
    HandoffAccepted,
    HandoffRejected,
    HandoffRejectionCode,
    StepCompleted,
    TaskRequested,
)
from baton.supervisor import Outcome, RequestStep, Supervisor, TaskRejectedError, WorkflowState
from baton.workflows import END, load_workflows

WF = "wf-1"


def env() -> Envelope:
    return Envelope(workflow_id=WF, tenant_id="t1", producer="test")


def task(workflow_type: str = "support_refund", context: object = None) -> TaskRequested:
    return TaskRequested(
        envelope=env(),
        workflow_type=workflow_type,
        requested_by="test",
        input_json=json.dumps(context if context is not None else {"ticket_id": "tkt-1"}),
    )


@pytest.fixture
def sup() -> Supervisor:
    return Supervisor(load_workflows(), backoff_base_s=1.0, backoff_cap_s=8.0)


def accept(sup: Supervisor, to_agent: str, extra: dict[str, object], from_agent: str | None = None) -> object:
    state = sup.states[WF]
    cp = state.checkpoint
    ctx = dict(json.loads(cp.context_json), **extra)
    return HandoffAccepted(
        envelope=env(),
        from_agent=from_agent or state.current_agent,
        to_agent=to_agent,
        snapshot=make_snapshot(ctx, version=cp.version + 1, parent=cp),
        diff=ContextDiff(added=sorted(extra)),
    )


def result(
    agent: str,
    *,
    ok: bool = True,
    code: str | None = None,
    cls: FailureClass | None = None,
    attempt: int = 1,
    tokens: int = 100,
) -> StepCompleted:
    return StepCompleted(
        envelope=env(),
        agent=agent,
        succeeded=ok,
        error_code=code,
        failure_class=cls,
        error=code,
        attempt=attempt,
        tokens_used=tokens,
        tool_calls=1,
    )


def test_a_task_checkpoints_and_requests_the_first_agent(sup: Supervisor) -> None:
    t = sup.handle(task(), now=0.0)
    assert t.state is not None and t.state.current_agent == "ticket_lookup"
    assert t.effects == (RequestStep("ticket_lookup", 1),)
    assert t.state.checkpoint.version == 1


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (task("no_such_workflow"), "UNKNOWN_WORKFLOW_TYPE"),
        (task(context=[1, 2]), "BAD_INPUT"),
        (task(context={"nothing": 1}), "BAD_INPUT"),
    ],
)
def test_bad_tasks_are_refused_with_what_to_fix(sup: Supervisor, bad: TaskRequested, code: str) -> None:
    with pytest.raises(TaskRejectedError) as info:
        sup.handle(bad, now=0.0)
    assert info.value.code == code


def test_accepted_handoffs_walk_the_routes_to_completion(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    t = sup.handle(accept(sup, "refund_preview", {"ticket": {"id": 1}, "order": {"id": 2}}), now=1.0)  # type: ignore[arg-type]
    assert t.effects and isinstance(t.effects[0], RequestStep) and t.effects[0].agent == "refund_preview"
    assert t.effects[0].diff == ContextDiff(added=["order", "ticket"])
    t = sup.handle(accept(sup, END, {"refund_preview": {"amount": 0}}), now=2.0)  # type: ignore[arg-type]
    assert t.effects == (Outcome("completed", "COMPLETED", "2 steps"),)
    assert sup.states[WF].status == "completed"
    assert sup.handle(task(), now=3.0).state is None  # a redelivered task does not start it again


def test_a_handoff_routed_elsewhere_than_declared_escalates(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    sup.handle(accept(sup, "refund_preview", {"ticket": {}, "order": {}}), now=1.0)  # type: ignore[arg-type]
    t = sup.handle(accept(sup, "refund_issuer", {"refund_preview": {"amount": 0}}), now=2.0)  # type: ignore[arg-type]
    assert isinstance(t.effects[0], Outcome) and t.effects[0].reason_code == "ROUTING_MISMATCH"


def test_duplicate_and_late_verdicts_are_ignored(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    first = accept(sup, "refund_preview", {"ticket": {}, "order": {}})
    sup.handle(first, now=1.0)  # type: ignore[arg-type]
    assert sup.handle(first, now=1.5).state is None  # type: ignore[arg-type]
    assert sup.handle(result("ticket_lookup"), now=2.0).state is None


def _reject(sup: Supervisor, n: int) -> HandoffRejected:
    state = sup.states[WF]
    return HandoffRejected(
        envelope=env().model_copy(update={"causation_id": f"proposal-{n}"}),
        from_agent=state.current_agent,
        to_agent="refund_preview",
        reason_code=HandoffRejectionCode.TRUNCATED,
        reason="cut",
        failure_class=FailureClass.CONTEXT,
        proposed_sha256="x",
        expected_parent_sha256=state.checkpoint.sha256,
    )


def test_a_rejected_handoff_is_rebuilt_from_the_checkpoint_once_then_escalated(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    t = sup.handle(_reject(sup, 1), now=1.0)
    assert t.effects == (RequestStep("ticket_lookup", 2),)
    assert sup.handle(_reject(sup, 1), now=1.1).state is None  # same rejection redelivered
    t = sup.handle(_reject(sup, 2), now=2.0)
    assert isinstance(t.effects[0], Outcome)
    assert (t.effects[0].kind, t.effects[0].reason_code) == ("escalated", "CONTEXT_RETRY_EXHAUSTED")


def test_transient_failures_back_off_then_escalate(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    delays = []
    for attempt in range(1, 6):
        t = sup.handle(
            result(
                "ticket_lookup",
                ok=False,
                code=f"RATE_LIMITED_{attempt}",
                cls=FailureClass.TRANSIENT,
                attempt=attempt,
                tokens=1,
            ),
            now=float(attempt),
        )
        step = t.effects[0]
        assert isinstance(step, RequestStep) and step.attempt == attempt + 1
        delays.append(step.delay_s)
    assert all(0 < d <= 8.0 for d in delays) and delays[3] > delays[0]
    t = sup.handle(
        result("ticket_lookup", ok=False, code="RATE_LIMITED_6", cls=FailureClass.TRANSIENT, attempt=6, tokens=1),
        now=7.0,
    )
    assert isinstance(t.effects[0], Outcome) and t.effects[0].reason_code == "TRANSIENT_RETRIES_EXHAUSTED"


def test_identical_errors_in_a_row_trip_the_breaker(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    for attempt in range(1, 3):
        sup.handle(
            result(
                "ticket_lookup", ok=False, code="RATE_LIMITED", cls=FailureClass.TRANSIENT, attempt=attempt, tokens=1
            ),
            now=float(attempt),
        )
    t = sup.handle(
        result("ticket_lookup", ok=False, code="RATE_LIMITED", cls=FailureClass.TRANSIENT, attempt=3, tokens=1), now=3.0
    )
    assert isinstance(t.effects[0], Outcome) and t.effects[0].reason_code == "CONSECUTIVE_ERRORS"


@pytest.mark.parametrize(
    ("code", "cls", "kind", "reason"),
    [
        ("LOOP_DETECTED", FailureClass.LOGIC, "halted", "BUDGET_LOOP"),
        ("APPROVAL_REQUIRED", None, "escalated", "APPROVAL_REQUIRED"),
        ("LOW_CONFIDENCE", FailureClass.LOGIC, "escalated", "LOW_CONFIDENCE"),
        ("DISK_ON_FIRE", FailureClass.SYSTEMIC, "halted", "DISK_ON_FIRE"),
    ],
)
def test_failure_classes_decide_the_outcome(
    sup: Supervisor, code: str, cls: FailureClass | None, kind: str, reason: str
) -> None:
    sup.handle(task(), now=0.0)
    t = sup.handle(result("ticket_lookup", ok=False, code=code, cls=cls), now=1.0)
    assert isinstance(t.effects[0], Outcome) and (t.effects[0].kind, t.effects[0].reason_code) == (kind, reason)


def test_token_budget_and_wall_clock_halt_the_workflow(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    limit = sup.workflows["support_refund"].budgets.max_tokens
    t = sup.handle(result("ticket_lookup", tokens=limit + 1), now=1.0)
    assert isinstance(t.effects[0], Outcome) and t.effects[0].reason_code == "BUDGET_TOKENS"
    other = Supervisor(load_workflows())
    other.handle(task(), now=0.0)
    assert other.check_wall_clock(now=10.0) == []
    [(state, outcome)] = other.check_wall_clock(now=10_000.0)
    assert outcome.reason_code == "BUDGET_WALL_CLOCK" and state.status == "halted"


def test_state_survives_a_round_trip_through_its_checkpoint(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    sup.handle(accept(sup, "refund_preview", {"ticket": {}, "order": {}}), now=1.0)  # type: ignore[arg-type]
    saved = sup.states[WF].to_json()
    fresh = Supervisor(load_workflows())
    fresh.restore(WorkflowState.from_json(saved))
    assert fresh.states[WF] == sup.states[WF]
    # A redelivered task on the restored supervisor re-emits what is owed, nothing new.
    t = fresh.handle(task(), now=2.0)
    assert t.effects == (RequestStep("refund_preview", 1),)
    older = WorkflowState.from_json(saved)
    older.seq -= 1
    assert fresh.restore(older) is False
    assert fresh.restore(WorkflowState.from_json(saved)) is False  # the same checkpoint again
    assert fresh.states[WF].seq == sup.states[WF].seq
