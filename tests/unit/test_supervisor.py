"""The supervisor's state machine, event by event."""

from __future__ import annotations

import hashlib
import json

import pytest

from baton.context import make_snapshot
from baton.contracts.models import (
    ContextDiff,
    Envelope,
    Event,
    FailureClass,
    HandoffAccepted,
    HandoffRejected,
    HandoffRejectionCode,
    StepCompleted,
    TaskRequested,
    WorkflowCheckpointed,
)
from baton.supervisor import (
    Outcome,
    RequestStep,
    Supervisor,
    Transition,
    UnknownWorkflowError,
    WorkflowState,
    proposal_event_id,
)
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


class Acknowledged(Supervisor):
    """As the service uses it: every transition is committed (its publishes were acknowledged)."""

    def handle(self, event: Event, now: float) -> Transition:
        transition = super().handle(event, now)
        if transition.state is not None and not transition.replay:
            self.commit(transition.state)
        if transition.state is not None and transition.state.pending_outcome is not None:
            self.commit(self.finalize(transition.state))  # the outcome was published
        return transition


@pytest.fixture
def sup() -> Supervisor:
    return Acknowledged(load_workflows(), backoff_base_s=1.0, backoff_cap_s=8.0)


def result_counted(sup: Supervisor) -> None:
    """Deliver the current step's successful result, as the agent publishes it before its handoff."""
    state = sup.states[WF]
    if state.last_result != f"{state.current_agent}:{state.attempt}":
        t = sup.handle(result(state.current_agent, attempt=state.attempt, tokens=10), now=0.5)
        if not isinstance(sup, Acknowledged) and t.state is not None:
            sup.commit(t.state)


def answering(state: WorkflowState) -> Envelope:
    """The envelope of a verdict on the current attempt's proposal."""
    proposal = proposal_event_id(WF, state.current_agent, state.checkpoint.version, state.attempt)
    return env().model_copy(update={"causation_id": proposal})


def accept(sup: Supervisor, to_agent: str, extra: dict[str, object], from_agent: str | None = None) -> object:
    result_counted(sup)
    state = sup.states[WF]
    cp = state.checkpoint
    ctx = dict(json.loads(cp.context_json), **extra)
    return HandoffAccepted(
        envelope=answering(state),
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
def test_bad_tasks_get_one_halted_outcome_saying_what_to_fix(sup: Supervisor, bad: TaskRequested, code: str) -> None:
    t = sup.handle(bad, now=0.0)
    assert t.state is not None and t.state.pending_outcome is not None  # checkpointed, then published, then final
    [outcome] = t.effects
    assert isinstance(outcome, Outcome) and (outcome.kind, outcome.reason_code) == ("halted", code)
    assert outcome.reason.startswith("task rejected: ")
    assert sup.handle(bad, now=1.0).state is None  # the same task again: no second outcome
    assert WF not in sup.states and sup.finished[WF][1] == code


def test_an_oversized_task_context_is_refused_at_the_first_hop() -> None:
    small = Acknowledged(load_workflows(), max_context_bytes=1000)
    t = small.handle(task(context={"ticket_id": "x" * 2000}), now=0.0)
    [outcome] = t.effects
    assert isinstance(outcome, Outcome) and outcome.reason_code == "CONTEXT_TOO_LARGE"
    assert "1000-byte context limit" in outcome.reason


def test_a_transition_changes_nothing_held_until_it_is_committed() -> None:
    plain = Supervisor(load_workflows())
    t = plain.handle(task(), now=0.0)
    assert plain.states == {}  # the checkpoint and step were not acknowledged yet
    assert t.state is not None
    plain.commit(t.state)
    result_counted(plain)
    held = plain.states[WF].to_json()
    cp = plain.states[WF].checkpoint
    ok = HandoffAccepted(
        envelope=answering(plain.states[WF]),
        from_agent="ticket_lookup",
        to_agent="refund_preview",
        snapshot=make_snapshot({"ticket_id": "tkt-1", "ticket": {}, "order": {}}, version=2, parent=cp),
        diff=ContextDiff(added=["order", "ticket"]),
    )
    first = plain.handle(ok, now=1.0)
    assert plain.states[WF].to_json() == held  # publish failed, say: nothing moved
    again = plain.handle(ok, now=1.0)  # the retried event is decided again, the same way
    assert again == first and again.state is not None
    plain.commit(again.state)
    assert plain.states[WF].current_agent == "refund_preview"


def test_events_of_unknown_workflows_and_other_tenants_are_refused(sup: Supervisor) -> None:
    with pytest.raises(UnknownWorkflowError) as info:
        sup.handle(result("ticket_lookup"), now=0.0)
    assert info.value.code == "UNKNOWN_WORKFLOW"
    sup.handle(task(), now=0.0)
    foreign = result("ticket_lookup").model_copy(
        update={"envelope": Envelope(workflow_id=WF, tenant_id="t2", producer="test")}
    )
    with pytest.raises(UnknownWorkflowError) as info:
        sup.handle(foreign, now=1.0)
    assert info.value.code == "TENANT_MISMATCH"


def test_a_step_result_is_counted_once(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    assert sup.handle(result("ticket_lookup", tokens=100), now=1.0).state is not None
    assert sup.handle(result("ticket_lookup", tokens=100), now=1.0).state is None  # redelivered
    assert sup.states[WF].tokens == 100 and sup.states[WF].steps == 1


def test_finished_workflows_are_bounded_tombstones() -> None:
    small = Acknowledged(load_workflows(), finished_capacity=3)
    for i in range(10):
        small.handle(
            task("no_such_workflow").model_copy(
                update={"envelope": Envelope(workflow_id=f"wf-{i}", tenant_id="t", producer="p")}
            ),
            now=0.0,
        )
    assert small.states == {} and list(small.finished) == ["wf-7", "wf-8", "wf-9"]


def test_accepted_handoffs_walk_the_routes_to_completion(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    t = sup.handle(accept(sup, "refund_preview", {"ticket": {"id": 1}, "order": {"id": 2}}), now=1.0)  # type: ignore[arg-type]
    assert t.effects and isinstance(t.effects[0], RequestStep) and t.effects[0].agent == "refund_preview"
    assert t.effects[0].diff == ContextDiff(added=["order", "ticket"])
    t = sup.handle(accept(sup, END, {"refund_preview": {"amount": 0}}), now=2.0)  # type: ignore[arg-type]
    assert t.effects == (Outcome("completed", "COMPLETED", "2 steps"),)
    assert WF not in sup.states and sup.finished[WF][1] == "COMPLETED"  # finished: a tombstone only
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


def _reject(sup: Supervisor) -> HandoffRejected:
    result_counted(sup)
    state = sup.states[WF]
    return HandoffRejected(
        envelope=answering(state),
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
    first = _reject(sup)
    t = sup.handle(first, now=1.0)
    assert t.effects == (RequestStep("ticket_lookup", 2),)
    assert sup.handle(first, now=1.1).state is None  # same rejection redelivered
    # ... even after the next attempt failed transiently and was retried (it answers attempt 1, not 3)
    sup.handle(result("ticket_lookup", ok=False, code="RATE_LIMITED", cls=FailureClass.TRANSIENT, attempt=2), now=1.2)
    late = sup.handle(first, now=1.3)
    assert late.state is None and not late.early
    t = sup.handle(_reject(sup), now=2.0)
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
    other = Acknowledged(load_workflows())
    other.handle(task(), now=0.0)
    assert other.check_wall_clock(now=10.0) == []
    [halt] = other.check_wall_clock(now=10_000.0)
    [outcome] = halt.effects
    assert isinstance(outcome, Outcome) and outcome.reason_code == "BUDGET_WALL_CLOCK"
    assert halt.state is not None and halt.state.pending_outcome is not None
    assert other.states[WF].status == "running"  # until the halt is published and committed


def test_state_survives_a_round_trip_through_its_checkpoint(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    sup.handle(accept(sup, "refund_preview", {"ticket": {}, "order": {}}), now=1.0)  # type: ignore[arg-type]
    held = sup.states[WF]
    checkpoint = WorkflowCheckpointed(
        envelope=env(),
        workflow_type=held.workflow_type,
        state=held.status,
        snapshot=held.checkpoint,
        supervisor_state_json=held.to_json(),
    )
    assert "context_json" not in checkpoint.supervisor_state_json  # the context travels once, in snapshot
    fresh = Supervisor(load_workflows())
    fresh.restore(WorkflowState.from_checkpoint(checkpoint))
    assert fresh.states[WF] == held
    # A redelivered task on the restored supervisor re-emits what is owed, nothing new.
    t = fresh.handle(task(), now=2.0)
    assert t.effects == (RequestStep("refund_preview", 1),) and t.replay
    older = WorkflowState.from_checkpoint(checkpoint)
    older.seq -= 1
    assert fresh.restore(older) is False
    assert fresh.restore(WorkflowState.from_checkpoint(checkpoint)) is False  # the same checkpoint again
    assert fresh.states[WF].seq == held.seq


@pytest.mark.parametrize(
    "state_json", ["not json", "[1]", '{"workflow_id": "other"}', '{"nonsense": 1}', '{"started_at": "yesterday"}']
)
def test_a_checkpoint_whose_state_does_not_parse_is_refused_with_a_reason(state_json: str) -> None:
    checkpoint = WorkflowCheckpointed(
        envelope=env(),
        workflow_type="support_refund",
        state="running",
        snapshot=make_snapshot({}, version=1),
        supervisor_state_json=state_json,
    )
    with pytest.raises(ValueError, match=r"supervisor state|holds the state of"):
        WorkflowState.from_checkpoint(checkpoint)


def test_a_verdict_that_overtakes_its_step_result_waits_for_it_so_the_budget_counts_the_step(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    cp = sup.states[WF].checkpoint
    early = HandoffAccepted(
        envelope=answering(sup.states[WF]),
        from_agent="ticket_lookup",
        to_agent="refund_preview",
        snapshot=make_snapshot({"ticket_id": "tkt-1", "ticket": {}, "order": {}}, version=2, parent=cp),
        diff=ContextDiff(added=["order", "ticket"]),
    )
    held = sup.handle(early, now=1.0)
    assert held.early and held.state is None  # results and verdicts travel on different topics
    limit = sup.workflows["support_refund"].budgets.max_tokens
    t = sup.handle(result("ticket_lookup", tokens=limit + 1), now=1.1)
    [outcome] = t.effects
    assert isinstance(outcome, Outcome) and outcome.reason_code == "BUDGET_TOKENS"  # not skipped by the verdict


def test_a_checkpointed_state_with_a_mistyped_field_is_refused(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    held = sup.states[WF]
    fields = json.loads(held.to_json())
    fields["started_at"] = "yesterday"  # would break every wall-clock sweep if it were adopted
    checkpoint = WorkflowCheckpointed(
        envelope=env(),
        workflow_type=held.workflow_type,
        state="running",
        snapshot=held.checkpoint,
        supervisor_state_json=json.dumps(fields),
    )
    with pytest.raises(ValueError, match="started_at"):
        WorkflowState.from_checkpoint(checkpoint)


@pytest.mark.parametrize("forged_part", ["context_json", "sha256"])
def test_an_accepted_context_whose_hash_does_not_hold_is_not_adopted(sup: Supervisor, forged_part: str) -> None:
    sup.handle(task(), now=0.0)
    verdict = accept(sup, "refund_preview", {"ticket": {"id": "tkt-1"}})
    assert isinstance(verdict, HandoffAccepted)
    snap = verdict.snapshot
    forge = (
        {"context_json": snap.context_json.replace("tkt-1", "tkt-9")}  # another ticket, same length
        if forged_part == "context_json"
        else {"sha256": "0" * 64}
    )
    why = "HASH_MISMATCH"
    forged = verdict.model_copy(update={"snapshot": snap.model_copy(update=forge)})
    t = sup.handle(forged, now=1.0)
    [outcome] = t.effects
    assert isinstance(outcome, Outcome) and outcome.kind == "halted" and outcome.reason_code == "UNVERIFIED_CONTEXT"
    assert why in outcome.reason and "ticket_lookup" in outcome.reason
    assert WF not in sup.states  # finished: nothing after it runs on that context


def test_an_accepted_context_that_is_not_canonical_is_not_adopted(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    verdict = accept(sup, "refund_preview", {"ticket": {"id": "tkt-1"}})
    assert isinstance(verdict, HandoffAccepted)
    pretty = json.dumps(json.loads(verdict.snapshot.context_json), indent=1)
    snapshot = verdict.snapshot.model_copy(
        update={
            "context_json": pretty,
            "sha256": hashlib.sha256(pretty.encode()).hexdigest(),
            "size_bytes": len(pretty.encode()),
        }
    )
    t = sup.handle(verdict.model_copy(update={"snapshot": snapshot}), now=1.0)
    [outcome] = t.effects
    assert (
        isinstance(outcome, Outcome) and outcome.reason_code == "UNVERIFIED_CONTEXT" and "MALFORMED" in outcome.reason
    )
