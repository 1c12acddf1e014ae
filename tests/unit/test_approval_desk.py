"""The approval desk's rules over the embedded store: M of N distinct reviewers, no self-approval, one rejection
rejects, a double click counts once, every refusal names its code and changes nothing, SLA fallbacks, the
reviewer's summary and the 90-day figures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from baton.approvals.desk import ApprovalDesk
from baton.approvals.model import (
    ActionBinding,
    ApprovalError,
    ApprovalRequest,
    ApprovalState,
    Reviewer,
    from_doc,
    to_doc,
)
from baton.approvals.store_sqlite import SqliteApprovalStore

T0 = 1_800_000_000.0
ALICE = Reviewer("alice", frozenset({"support-leads"}), frozenset({"approver"}))
BOB = Reviewer("bob", frozenset({"*"}), frozenset({"approver"}))
CAROL = Reviewer("carol", frozenset({"support-leads"}), frozenset({"approver"}))
VIEWER = Reviewer("vic", frozenset({"*"}), frozenset({"viewer"}))
OUTSIDER = Reviewer("olga", frozenset({"compliance"}), frozenset({"approver"}))
AGENT = Reviewer("refund_issuer", frozenset({"*"}), frozenset({"approver"}))
SUBMITTER = Reviewer("sam", frozenset({"*"}), frozenset({"approver"}))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def request(
    approval_id: str = "ap-1", *, required: int = 2, amount: float = 900.0, **changes: object
) -> ApprovalRequest:
    action = ActionBinding(
        workflow_id=f"wf-{approval_id}",
        tenant_id="acme",
        agent="refund_issuer",
        tool="issue_refund",
        arguments_json=f'{{"ticket_id": "T-1", "amount": {amount}}}',
        arguments_sha256="a" * 64,
        idempotency_key=f"wf-{approval_id}:refund_issuer:issue_refund:v3.0",
        context_sha256="c" * 64,
        policy_version="sha256:p1",
        step_version=3,
    )
    fields: dict[str, object] = {
        "approval_id": approval_id,
        "action": action,
        "workflow_type": "support_refund",
        "queue": "support-leads",
        "required_approvals": required,
        "expires_at": T0 + 3600,
        "fallback": "reject",
        "escalate_to": None,
        "reason": "issue_refund (IRREVERSIBLE) needs a human's approval",
        "rationale": "the order arrived broken",
        "confidence": 0.91,
        "decision_type": None,
        "tier": "IRREVERSIBLE",
        "preview": {
            "before": {"order": {"refunded": 0.0, "left": 1000.0}},
            "after": {"order": {"refunded": amount, "left": 1000.0 - amount}},
        },
        "lineage": ("ticket_lookup", "refund_preview"),
        "requested_at": T0,
        "bound_from": {"ticket_id": "ticket_id", "amount": "refund_preview.amount"},
        "submitted_by": "sam",
    }
    fields.update(changes)
    return ApprovalRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[tuple[ApprovalDesk, Clock]]:
    store = SqliteApprovalStore(tmp_path / "approvals.db")
    await store.setup()
    clock = Clock()
    yield ApprovalDesk(store, clock=clock), clock
    await store.close()


async def test_two_of_three_need_two_distinct_reviewers_and_a_double_click_counts_once(
    desk: tuple[ApprovalDesk, Clock],
) -> None:
    d, _ = desk
    assert await d.receive(request()) and not await d.receive(request())  # redelivered: the first stands
    digest = (await d.get("ap-1")).digest
    once = await d.decide("ap-1", reviewer=ALICE, kind="approve", reason="ok", digest=digest)
    with pytest.raises(ApprovalError) as twice:
        await d.decide("ap-1", reviewer=ALICE, kind="approve", reason="ok again", digest=digest)
    assert twice.value.code == "ALREADY_VOTED" and await d.get("ap-1") == once  # counted once, nothing changed
    assert once.state is ApprovalState.PENDING and len(once.votes) == 1
    done = await d.decide("ap-1", reviewer=BOB, kind="approve", reason="checked the order", digest=digest)
    assert (done.state, done.decided_by, done.published) == (ApprovalState.APPROVED, ("alice", "bob"), False)
    with pytest.raises(ApprovalError) as again:  # the deciding click, again
        await d.decide("ap-1", reviewer=BOB, kind="approve", reason="", digest=digest)
    assert again.value.code == "ALREADY_DECIDED" and await d.get("ap-1") == done
    with pytest.raises(ApprovalError) as late:
        await d.decide("ap-1", reviewer=CAROL, kind="reject", reason="too late")
    assert (late.value.code, late.value.status) == ("ALREADY_DECIDED", 409)
    assert [a.approval_id for a in await d.unpublished()] == ["ap-1"]
    await d.mark_published("ap-1")
    assert await d.unpublished() == []


async def test_one_rejection_rejects_and_says_who_and_why(desk: tuple[ApprovalDesk, Clock]) -> None:
    d, _ = desk
    await d.receive(request(required=3))
    await d.decide("ap-1", reviewer=ALICE, kind="approve", reason="fine")
    rejected = await d.decide("ap-1", reviewer=CAROL, kind="reject", reason="refunded by phone already")
    assert (rejected.state, rejected.decided_by, rejected.comment) == (
        ApprovalState.REJECTED,
        ("carol",),
        "refunded by phone already",
    )


@pytest.mark.parametrize(
    ("reviewer", "kind", "reason", "digest", "code", "status"),
    [
        (OUTSIDER, "approve", "", None, "WRONG_QUEUE", 403),
        (VIEWER, "approve", "", None, "NOT_APPROVER", 403),
        (AGENT, "approve", "", None, "SELF_APPROVAL", 403),
        (SUBMITTER, "approve", "", None, "SELF_APPROVAL", 403),  # he submitted the task
        (ALICE, "approve", "", "d" * 64, "ACTION_CHANGED", 409),
        (ALICE, "reject", "  ", None, "REASON_REQUIRED", 422),
    ],
)
async def test_a_vote_that_cannot_be_taken_names_why_and_changes_nothing(
    desk: tuple[ApprovalDesk, Clock],
    reviewer: Reviewer,
    kind: str,
    reason: str,
    digest: str | None,
    code: str,
    status: int,
) -> None:
    d, _ = desk
    await d.receive(request())
    before = await d.get("ap-1")
    with pytest.raises(ApprovalError) as refused:
        await d.decide("ap-1", reviewer=reviewer, kind=kind, reason=reason, digest=digest)  # type: ignore[arg-type]
    assert (refused.value.code, refused.value.status) == (code, status) and str(refused.value)
    assert await d.get("ap-1") == before
    with pytest.raises(ApprovalError) as unknown:
        await d.decide("ap-nope", reviewer=ALICE, kind="approve", reason="")
    assert (unknown.value.code, unknown.value.status) == ("UNKNOWN_APPROVAL", 404)


async def test_a_second_different_vote_by_the_same_reviewer_is_refused(desk: tuple[ApprovalDesk, Clock]) -> None:
    d, _ = desk
    await d.receive(request())
    await d.decide("ap-1", reviewer=ALICE, kind="approve", reason="ok")
    with pytest.raises(ApprovalError, match="already voted") as refused:
        await d.decide("ap-1", reviewer=ALICE, kind="reject", reason="changed my mind")
    assert refused.value.code == "ALREADY_VOTED"


async def test_past_its_sla_an_approval_escalates_once_then_expires(desk: tuple[ApprovalDesk, Clock]) -> None:
    d, clock = desk
    await d.receive(request("ap-esc", fallback="escalate", escalate_to="finance-leads"))
    await d.receive(request("ap-rej"))
    clock.now = T0 + 3600
    with pytest.raises(ApprovalError) as late:  # not swept yet: still refused, nothing changes
        await d.decide("ap-rej", reviewer=ALICE, kind="approve", reason="")
    assert late.value.code == "EXPIRED"
    changed = {a.approval_id: a for a in await d.expire_due()}
    assert changed["ap-rej"].state is ApprovalState.EXPIRED and changed["ap-rej"].decided_by == ("sla",)
    moved = changed["ap-esc"]
    assert (moved.state, moved.queue, moved.expires_at, moved.escalations) == (
        ApprovalState.PENDING,
        "finance-leads",
        T0 + 7200,
        1,
    )
    assert await d.expire_due() == []  # nothing else due
    clock.now = T0 + 7200
    (expired,) = await d.expire_due()
    assert (expired.approval_id, expired.state) == ("ap-esc", ApprovalState.EXPIRED)


async def test_the_summary_shows_the_dry_run_as_a_diff_the_plan_the_reasons_and_the_lineage(
    desk: tuple[ApprovalDesk, Clock],
) -> None:
    d, _ = desk
    await d.receive(request())
    shown = d.summary(await d.get("ap-1"))
    assert shown["what_changes"]["diff"] == [
        {"field": "order.left", "before": 1000.0, "after": 100.0, "changed": True},
        {"field": "order.refunded", "before": 0.0, "after": 900.0, "changed": True},
    ]
    assert shown["what_changes"]["plan"] == [
        {"argument": "ticket_id", "value": "T-1", "bound_from": "ticket_id"},
        {"argument": "amount", "value": 900.0, "bound_from": "refund_preview.amount"},
    ]
    assert shown["lineage_text"] == "ticket_lookup → refund_preview → refund_issuer"
    assert (shown["why"], shown["confidence"], shown["required"]) == ("the order arrived broken", 0.91, 2)
    assert shown["decision_point"]["agent"] == "refund_issuer" and shown["digest"] == (await d.get("ap-1")).digest


async def test_the_figures_of_the_first_90_days(desk: tuple[ApprovalDesk, Clock]) -> None:
    d, clock = desk
    for i in range(4):
        await d.receive(request(f"ap-{i}", required=1))
    clock.now = T0 + 60
    await d.decide("ap-0", reviewer=ALICE, kind="approve", reason="")
    clock.now = T0 + 120
    await d.decide("ap-1", reviewer=ALICE, kind="approve", reason="")
    await d.decide("ap-2", reviewer=ALICE, kind="reject", reason="no")
    figures = (await d.stats(since=T0 - 90 * 86400))["groups"]
    total = figures["total"]
    assert {k: total[k] for k in ("requested", "decided", "approved", "rejected", "expired", "pending")} == {
        "requested": 4,
        "decided": 3,
        "approved": 2,
        "rejected": 1,
        "expired": 0,
        "pending": 1,
    }
    assert total["time_to_decision_p50_s"] == 120.0 and total["agreement_rate"] == pytest.approx(2 / 3)
    assert figures["support_refund/issue_refund"]["requested"] == 4


def test_an_approval_survives_its_document() -> None:
    from baton.approvals.model import Approval, Vote

    approval = Approval(
        request(),
        ApprovalState.APPROVED,
        "support-leads",
        T0,
        votes=(Vote("alice", "approve", "ok", T0),),
        decided_by=("alice",),
    )
    assert from_doc(to_doc(approval)) == approval
