"""A workflow waiting for humans: checkpointed, never nudged or timed out by the wall clock, resumed once on the
decision (approved: the step again, showing the approval; rejected or expired: halted with the reviewers' word)."""

from __future__ import annotations

import json

import pytest

from baton.contracts.models import ApprovalDecided, ApprovalDecision, StepCompleted, WorkflowCheckpointed
from baton.supervisor import Outcome, RequestStep, Supervisor, WorkflowState
from baton.workflows import END, load_workflows
from tests.unit.test_supervisor import WF, Acknowledged, accept, env, task


@pytest.fixture
def sup() -> Supervisor:
    return Acknowledged(load_workflows(), backoff_base_s=1.0, backoff_cap_s=8.0)


def _waiting(sup: Supervisor) -> WorkflowState:
    """A support_refund workflow whose refund_issuer step asked for approval ap-1."""
    sup.handle(task(), now=0.0)
    sup.handle(accept(sup, "refund_preview", {"ticket": {}, "order": {}}), now=1.0)  # type: ignore[arg-type]
    sup.handle(accept(sup, "refund_issuer", {"refund_preview": {"amount": 900.0}}), now=2.0)  # type: ignore[arg-type]
    asked = StepCompleted(
        envelope=env(),
        agent="refund_issuer",
        succeeded=False,
        error_code="APPROVAL_REQUIRED",
        error="issue_refund needs a human's approval",
        attempt=1,
        tokens_used=10,
        approval_id="ap-1",
    )
    t = sup.handle(asked, now=3.0)
    assert t.effects == () and t.state is not None and t.state.awaiting_approval == "ap-1"
    return sup.states[WF]


def _decided(decision: ApprovalDecision, approval_id: str = "ap-1", **extra: object) -> ApprovalDecided:
    return ApprovalDecided(envelope=env(), approval_id=approval_id, decision=decision, **extra)


def test_an_approved_action_resumes_the_step_once_showing_the_approval(sup: Supervisor) -> None:
    waiting = _waiting(sup)
    assert sup.wall_clock_halt(WF, now=10_000.0) is None  # humans' time is bounded by the approval's SLA
    other = sup.handle(_decided(ApprovalDecision.APPROVED, "ap-other", approval_token="tok"), now=4.0)
    assert other.state is None  # not the approval it waits for
    t = sup.handle(_decided(ApprovalDecision.APPROVED, decided_by=["alice", "bob"], approval_token="tok"), now=5.0)
    assert t.effects == (RequestStep("refund_issuer", waiting.attempt + 1),)
    assert sup.states[WF].approval_token == "tok" and sup.states[WF].awaiting_approval is None
    again = sup.handle(_decided(ApprovalDecision.APPROVED, approval_token="tok"), now=6.0)
    assert again.state is None and again.effects == ()  # a redelivered decision resumes nothing twice


@pytest.mark.parametrize(
    ("decision", "code", "says"),
    [
        (ApprovalDecision.REJECTED, "APPROVAL_REJECTED", "rejected by carol: over the refund ceiling"),
        (ApprovalDecision.EXPIRED, "APPROVAL_EXPIRED", "not decided in time"),
    ],
)
def test_a_rejected_or_expired_approval_halts_with_the_reviewers_word(
    sup: Supervisor, decision: ApprovalDecision, code: str, says: str
) -> None:
    _waiting(sup)
    t = sup.handle(_decided(decision, decided_by=["carol"], comment="over the refund ceiling"), now=5.0)
    (outcome,) = t.effects
    assert isinstance(outcome, Outcome) and (outcome.kind, outcome.reason_code) == ("halted", code)
    assert says in outcome.reason


def test_the_wait_survives_a_restart_from_its_checkpoint(sup: Supervisor) -> None:
    waiting = _waiting(sup)
    checkpoint = WorkflowCheckpointed(
        envelope=env(),
        workflow_type=waiting.workflow_type,
        state=waiting.status,
        snapshot=waiting.checkpoint,
        supervisor_state_json=waiting.to_json(),
    )
    restored = Acknowledged(load_workflows())
    restored.restore(WorkflowState.from_checkpoint(checkpoint))
    assert restored.states[WF].awaiting_approval == "ap-1"
    t = restored.handle(_decided(ApprovalDecision.APPROVED, approval_token="tok"), now=5.0)
    assert t.effects == (RequestStep("refund_issuer", waiting.attempt + 1),)


def test_without_an_approval_service_the_workflow_escalates_as_before() -> None:
    sup = Acknowledged(load_workflows(), await_approvals=False)
    sup.handle(task(), now=0.0)
    asked = StepCompleted(
        envelope=env(),
        agent="ticket_lookup",
        succeeded=False,
        error_code="APPROVAL_REQUIRED",
        error="needs a human",
        approval_id="ap-1",
    )
    (outcome,) = sup.handle(asked, now=1.0).effects
    assert isinstance(outcome, Outcome) and (outcome.kind, outcome.reason_code) == ("escalated", "APPROVAL_REQUIRED")


def test_time_waiting_for_humans_is_not_counted_against_the_wall_clock_budget(sup: Supervisor) -> None:
    _waiting(sup)  # waiting since t=3; the refund workflow's wall-clock budget is 300 s
    sup.handle(_decided(ApprovalDecision.APPROVED, approval_token="tok"), now=5_000.0)
    assert sup.states[WF].running_s(5_000.0) == pytest.approx(3.0)
    t = sup.handle(accept(sup, END, {"refund": {"refund_id": "r-1"}}), now=5_010.0)  # type: ignore[arg-type]
    (outcome,) = t.effects
    assert isinstance(outcome, Outcome) and outcome.kind == "completed"


def test_a_decision_that_overtakes_the_step_result_asking_for_it_is_kept_and_applied_once(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    sup.handle(accept(sup, "refund_preview", {"ticket": {}, "order": {}}), now=1.0)  # type: ignore[arg-type]
    sup.handle(accept(sup, "refund_issuer", {"refund_preview": {"amount": 900.0}}), now=2.0)  # type: ignore[arg-type]
    early = sup.handle(_decided(ApprovalDecision.APPROVED, approval_token="tok"), now=2.5)
    assert early.effects == () and sup.states[WF].early_decisions["ap-1"]["approval_token"] == "tok"
    attempt = sup.states[WF].attempt
    asked = StepCompleted(
        envelope=env(),
        agent="refund_issuer",
        succeeded=False,
        error_code="APPROVAL_REQUIRED",
        error="needs a human",
        attempt=attempt,
        approval_id="ap-1",
    )
    t = sup.handle(asked, now=3.0)
    assert t.effects == (RequestStep("refund_issuer", attempt + 1),) and sup.states[WF].approval_token == "tok"
    assert sup.states[WF].early_decisions == {} and sup.states[WF].awaiting_approval is None
    again = sup.handle(_decided(ApprovalDecision.APPROVED, approval_token="tok"), now=4.0)
    assert again.state is None  # redelivered after it resumed the workflow: nothing, not kept for later


def test_an_approval_asked_again_after_its_decision_escalates_instead_of_waiting_for_nobody(sup: Supervisor) -> None:
    waiting = _waiting(sup)
    sup.handle(_decided(ApprovalDecision.APPROVED, approval_token="tok"), now=5.0)
    asked_again = StepCompleted(
        envelope=env(),
        agent="refund_issuer",
        succeeded=False,
        error_code="APPROVAL_REQUIRED",
        error="the approval shown does not apply (approval ap-1 expired)",
        attempt=waiting.attempt + 1,
        approval_id="ap-1",
    )
    (outcome,) = sup.handle(asked_again, now=6.0).effects
    assert isinstance(outcome, Outcome) and (outcome.kind, outcome.reason_code) == (
        "escalated",
        "APPROVAL_NOT_HONOURED",
    )


def test_a_decision_that_arrives_after_its_token_expired_halts_instead_of_resuming(sup: Supervisor) -> None:
    _waiting(sup)
    stale = json.dumps({"approval": {"approval_id": "ap-1", "expires_at": 4.0}, "key_id": "k", "signature": "s"})
    (outcome,) = sup.handle(_decided(ApprovalDecision.APPROVED, approval_token=stale), now=5.0).effects
    assert isinstance(outcome, Outcome) and (outcome.kind, outcome.reason_code) == ("halted", "APPROVAL_EXPIRED")


def test_a_decision_for_a_workflow_this_supervisor_does_not_hold_is_ignored_not_dead_lettered(sup: Supervisor) -> None:
    assert sup.handle(_decided(ApprovalDecision.APPROVED), now=1.0).state is None
