"""The approval desk: the rules of deciding one approval, over a durable store (no HTTP, no broker).

M of N: an approval passes once `required_approvals` distinct reviewers approved; the same reviewer twice counts
once (a double click is refused ALREADY_VOTED, or ALREADY_DECIDED when its first click decided, and changes
nothing); the requesting agent can never vote; one rejection rejects.
A vote names the digest of the action the reviewer saw, so a changed action is never approved by mistake. Every
decision is stored with `published=False`: the service publishes ApprovalDecided from that outbox and then marks
it. Past its deadline an approval gets its declared fallback: moved once to another queue with a fresh SLA, or
expired.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from baton.approvals.model import (
    Approval,
    ApprovalError,
    ApprovalRequest,
    ApprovalState,
    ApprovalStore,
    Reviewer,
    Vote,
    VoteKind,
)

# Reviewer name the SLA decides as (an expired approval was decided by nobody).
SLA = "sla"


class ApprovalDesk:
    """Receives approval requests, takes reviewers' votes, applies SLA fallbacks; everything through the store."""

    def __init__(self, store: ApprovalStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    async def receive(self, request: ApprovalRequest) -> bool:
        """Keep a new request as pending; False (nothing changes) for one already received."""
        return await self.store.add(
            Approval(request=request, state=ApprovalState.PENDING, queue=request.queue, expires_at=request.expires_at)
        )

    async def get(self, approval_id: str) -> Approval:
        found = await self.store.get(approval_id)
        if found is None:
            raise _unknown(approval_id)
        return found

    async def pending(self, queue: str | None = None) -> list[Approval]:
        return await self.store.pending(queue=queue)

    async def decide(
        self, approval_id: str, *, reviewer: Reviewer, kind: VoteKind, reason: str, digest: str | None = None
    ) -> Approval:
        """Record one reviewer's vote; the approval as it stands after it. ApprovalError (nothing changed) when
        the vote cannot be taken: its code says why, its message what to do."""
        now = self._clock()

        def vote(current: Approval) -> tuple[Approval | None, Approval]:
            problem = _refusal(current, reviewer, kind, reason, digest, now)
            if problem is not None:
                raise problem
            mine = [v for v in current.votes if v.reviewer == reviewer.name]
            if mine:
                # A double click, or a second vote: the first counts, once; nothing changes.
                raise ApprovalError(
                    "ALREADY_VOTED",
                    f"{reviewer.name} already voted {mine[0].kind} on approval {current.approval_id}: a reviewer "
                    "counts once and a vote is not changed afterwards (another reviewer decides the rest); nothing "
                    "changed",
                    409,
                )
            votes = (*current.votes, Vote(reviewer.name, kind, reason, now))
            changed = replace(current, votes=votes)
            if kind == "reject":
                changed = replace(
                    changed,
                    state=ApprovalState.REJECTED,
                    decided_at=now,
                    decided_by=(reviewer.name,),
                    comment=reason,
                    published=False,
                )
            else:
                approvers = [v.reviewer for v in votes if v.kind == "approve"]
                if len(approvers) >= current.request.required_approvals:
                    changed = replace(
                        changed,
                        state=ApprovalState.APPROVED,
                        decided_at=now,
                        decided_by=tuple(approvers),
                        comment="; ".join(f"{v.reviewer}: {v.reason}" for v in votes if v.reason) or None,
                        published=False,
                    )
            return changed, replace(changed, version=current.version + 1)

        try:
            return await self.store.update(approval_id, vote)
        except KeyError:
            raise _unknown(approval_id) from None

    async def expire_due(self) -> list[Approval]:
        """Apply the fallback of every pending approval past its deadline; the approvals it changed."""
        now = self._clock()
        changed: list[Approval] = []
        for due in await self.store.due(now):

            def fallback(current: Approval) -> tuple[Approval | None, Approval | None]:
                if current.state is not ApprovalState.PENDING or current.expires_at > now:
                    return None, None  # decided or moved meanwhile (another replica, a reviewer)
                request = current.request
                if request.fallback == "escalate" and request.escalate_to and current.escalations == 0:
                    sla = max(request.expires_at - request.requested_at, 1.0)
                    moved = replace(current, queue=request.escalate_to, expires_at=now + sla, escalations=1)
                    return moved, moved
                expired = replace(
                    current,
                    state=ApprovalState.EXPIRED,
                    decided_at=now,
                    decided_by=(SLA,),
                    comment=f"nobody decided it in queue {current.queue} before {_iso(current.expires_at)}",
                    published=False,
                )
                return expired, expired

            result = await self.store.update(due.approval_id, fallback)
            if result is not None:
                changed.append(result)
        return changed

    async def unpublished(self) -> list[Approval]:
        """Decisions whose ApprovalDecided was not acknowledged yet."""
        return await self.store.unpublished()

    async def mark_published(self, approval_id: str) -> None:
        def mark(current: Approval) -> tuple[Approval | None, None]:
            return (None if current.published else replace(current, published=True)), None

        await self.store.update(approval_id, mark)

    def summary(self, approval: Approval) -> dict[str, Any]:
        """What a reviewer reads: what will change, why, how sure, where in the workflow, who voted (JSON-able)."""
        request = approval.request
        action = request.action
        now = self._clock()
        try:
            arguments: dict[str, Any] = json_object(action.arguments_json)
        except ValueError:
            arguments = {}
        diff = _diff(request.preview)
        approvals = [v.reviewer for v in approval.votes if v.kind == "approve"]
        return {
            "id": approval.approval_id,
            "state": approval.state.value,
            "queue": approval.queue,
            "deadline": _iso(approval.expires_at),
            "seconds_left": max(0.0, round(approval.expires_at - now, 1)),
            "title": f"{action.agent} wants to run {action.tool} ({request.tier or 'a write'})"
            + (f" in {request.workflow_type}" if request.workflow_type else ""),
            "what_changes": {
                "diff": diff,
                "preview": request.preview if request.preview is not None and not diff else None,
                "plan": [
                    {"argument": name, "value": value, "bound_from": request.bound_from.get(name)}
                    for name, value in arguments.items()
                ],
            },
            "why": request.rationale,
            "policy_reason": request.reason,
            "confidence": request.confidence,
            "decision_type": request.decision_type,
            "decision_point": {
                "workflow_type": request.workflow_type,
                "workflow_id": action.workflow_id,
                "agent": action.agent,
                "step_version": action.step_version,
                "tool": action.tool,
            },
            "lineage": list(request.lineage),
            "lineage_text": " → ".join([*request.lineage, action.agent]),
            "required": request.required_approvals,
            "approved": len(approvals),
            "approved_by": approvals,
            "votes": [
                {"reviewer": v.reviewer, "kind": v.kind, "reason": v.reason, "at": _iso(v.at)} for v in approval.votes
            ],
            "decided_by": list(approval.decided_by),
            "comment": approval.comment,
            "escalations": approval.escalations,
            "digest": approval.digest,
            "tier": request.tier,
            "tenant": action.tenant_id,
            "requested_at": _iso(request.requested_at),
        }

    async def stats(self, *, since: float, reviewer: Reviewer | None = None) -> dict[str, Any]:
        """The first 90 days' figures, in total and per (workflow type, decision type): requested, decided,
        approved, rejected, expired, SLA escalations, pending, time to decision (p50/p95 s), and how often
        reviewers agreed with the agent (approved) or not (rejected). Given a reviewer: of the queues they see."""
        groups: dict[str, Counter[str]] = defaultdict(Counter)
        waits: dict[str, list[float]] = defaultdict(list)

        def keys(approval: Approval) -> tuple[str, str]:
            request = approval.request
            return "total", f"{request.workflow_type or '-'}/{request.decision_type or request.action.tool}"

        def shown(approval: Approval) -> bool:
            return reviewer is None or reviewer.sees(approval.queue)

        for approval in filter(shown, await self.store.decided_since(since)):
            for key in keys(approval):
                counts = groups[key]
                counts["requested"] += 1
                counts[approval.state.value.lower()] += 1
                counts["escalated"] += approval.escalations
                if approval.state is not ApprovalState.EXPIRED:
                    counts["decided"] += 1
                    assert approval.decided_at is not None
                    waits[key].append(approval.decided_at - approval.request.requested_at)
        for approval in filter(shown, await self.store.pending(limit=100_000)):
            for key in keys(approval):
                groups[key]["requested"] += 1
                groups[key]["pending"] += 1
                groups[key]["escalated"] += approval.escalations
        out: dict[str, Any] = {}
        for key, counts in groups.items():
            decided = counts["decided"]
            times = sorted(waits[key])
            out[key] = {
                **{
                    k: counts[k]
                    for k in ("requested", "decided", "approved", "rejected", "expired", "escalated", "pending")
                },
                "time_to_decision_p50_s": statistics.median(times) if times else None,
                "time_to_decision_p95_s": times[min(len(times) - 1, int(len(times) * 0.95))] if times else None,
                # Reviewers agreeing with the agent's proposed action: an escalation a human found unnecessary is
                # the field's false positive of escalation; a rejection is the agent overruled.
                "agreement_rate": counts["approved"] / decided if decided else None,
                "disagreement_rate": counts["rejected"] / decided if decided else None,
                "escalation_false_positive_rate": counts["approved"] / decided if decided else None,
            }
        out.setdefault(
            "total", {k: 0 for k in ("requested", "decided", "approved", "rejected", "expired", "escalated", "pending")}
        )
        return {"since": _iso(since), "groups": out}


def json_object(text: str) -> dict[str, Any]:
    """A JSON object from text; ValueError for anything else."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _refusal(
    current: Approval, reviewer: Reviewer, kind: VoteKind, reason: str, digest: str | None, now: float
) -> ApprovalError | None:
    """Why this vote cannot be taken (None: it can), checked in the order a reviewer can act on."""
    aid = current.approval_id
    if not reviewer.sees(current.queue):
        return ApprovalError(
            "WRONG_QUEUE", f"approval {aid} is in queue {current.queue}, which {reviewer.name} does not review", 403
        )
    if not reviewer.approves:
        return ApprovalError("NOT_APPROVER", f"{reviewer.name} may read approvals but not decide them (a viewer)", 403)
    if reviewer.name in current.request.requesting_side:
        return ApprovalError(
            "SELF_APPROVAL",
            f"{reviewer.name} is on the requesting side of approval {aid} (the agent, or who submitted the task) and "
            "cannot decide it: another reviewer must",
            403,
        )
    if current.state is not ApprovalState.PENDING:
        return ApprovalError(
            "ALREADY_DECIDED",
            f"approval {aid} was already {current.state.value.lower()} by {', '.join(current.decided_by)}: "
            "nothing changed",
            409,
        )
    if digest is not None and digest != current.digest:
        return ApprovalError(
            "ACTION_CHANGED",
            f"approval {aid} is for action {current.digest[:12]}…, not the {digest[:12]}… you reviewed: reload it "
            "and review what it is now; nothing changed",
            409,
        )
    if now >= current.expires_at:
        return ApprovalError(
            "EXPIRED",
            f"approval {aid} expired at {_iso(current.expires_at)}: its SLA fallback applies; nothing changed",
            409,
        )
    if kind == "reject" and not reason.strip():
        return ApprovalError(
            "REASON_REQUIRED", f"say why approval {aid} is rejected: the workflow's owner reads it", 422
        )
    return None


def _unknown(approval_id: str) -> ApprovalError:
    return ApprovalError(
        "UNKNOWN_APPROVAL", f"there is no approval {approval_id!r}: check the id (baton approvals list)", 404
    )


def _diff(preview: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A dry run's before/after as rows (nested fields dotted); empty when the preview is not before/after."""
    if not preview or not isinstance(preview.get("before"), dict) or not isinstance(preview.get("after"), dict):
        return []
    before, after = _flat(preview["before"]), _flat(preview["after"])
    return [
        {"field": key, "before": before.get(key), "after": after.get(key), "changed": before.get(key) != after.get(key)}
        for key in sorted(before.keys() | after.keys())
    ]


def _flat(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            out.update(_flat(item, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = item
    return out


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
