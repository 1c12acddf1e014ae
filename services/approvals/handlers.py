"""Approval service handlers: each ApprovalRequested kept once; each decision published once it is stored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import PyMongoError

from baton import topics
from baton.approvals.desk import ApprovalDesk
from baton.approvals.model import ActionBinding, Approval, ApprovalRequest, ApprovalState
from baton.bus.base import BusRecord, RetryLaterError
from baton.contracts.models import (
    ApprovalDecided,
    ApprovalDecision,
    ApprovalFallback,
    ApprovalRequested,
    Event,
    stable_event_id,
)
from baton.messaging import EventBus, RejectedEvent
from baton.policy.grants import issue_approval_token
from baton.telemetry import metrics, tracing
from services.approvals.api import ChangeSignal

log = logging.getLogger(__name__)

STORE_ERRORS: tuple[type[BaseException], ...] = (OSError, sqlite3.Error, PyMongoError)
# A reviewer's comment travels in the decision (and the audit) up to this long.
MAX_COMMENT_CHARS = 2000
_DECISION = {
    ApprovalState.APPROVED: ApprovalDecision.APPROVED,
    ApprovalState.REJECTED: ApprovalDecision.REJECTED,
    ApprovalState.EXPIRED: ApprovalDecision.EXPIRED,
}


def request_of(event: ApprovalRequested) -> ApprovalRequest:
    """The pending approval an ApprovalRequested asks for; RejectedEvent when it cannot be one."""
    env = event.envelope
    action = ActionBinding(
        workflow_id=env.workflow_id,
        tenant_id=env.tenant_id,
        agent=event.agent,
        tool=event.tool,
        arguments_json=event.arguments_json,
        arguments_sha256=event.arguments_sha256,
        idempotency_key=event.call_id,
        context_sha256=event.context_sha256,
        policy_version=event.policy_version,
        step_version=event.step_version,
    )
    if event.action_digest and action.digest() != event.action_digest:
        raise RejectedEvent(
            "ACTION_DIGEST_MISMATCH",
            f"approval {event.approval_id}: action_digest {event.action_digest[:12]}… is not the digest of the action "
            f"the event describes ({action.digest()[:12]}…): nobody could approve what it names",
        )
    # What the agent sent for the reviewer to read: shown when it parses, never a reason to lose the approval.
    preview = _json_or_none(event.preview_json, f"approval {event.approval_id}: preview_json")
    bound_from = _json_or_none(event.bound_from_json, f"approval {event.approval_id}: bound_from_json")
    if event.required_approvals < 1 or not event.queue:
        raise RejectedEvent(
            "BAD_APPROVAL_REQUEST",
            f"approval {event.approval_id} names no queue or needs {event.required_approvals} reviewers: "
            "an approval needs a queue and at least one reviewer",
        )
    requested_at = (event.requested_at or env.occurred_at).timestamp()
    return ApprovalRequest(
        approval_id=event.approval_id,
        action=action,
        workflow_type=event.workflow_type,
        queue=event.queue,
        required_approvals=event.required_approvals,
        expires_at=event.expires_at.timestamp(),
        fallback="escalate" if event.fallback is ApprovalFallback.ESCALATE else "reject",
        escalate_to=event.escalate_to,
        reason=event.reason,
        rationale=event.rationale,
        confidence=event.confidence,
        decision_type=event.decision_type,
        tier=event.tier,
        preview=preview if isinstance(preview, dict) else ({"preview": preview} if preview is not None else None),
        lineage=tuple(event.lineage),
        requested_at=requested_at,
        bound_from={str(k): str(v) for k, v in bound_from.items()} if isinstance(bound_from, dict) else {},
        submitted_by=event.requested_by,
    )


def _json_or_none(text: str | None, what: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        log.warning("%s is not JSON (%s): the reviewer sees the approval without it", what, exc)
        return None


class ApprovalsHandlers:
    """Receives approval requests into the desk, publishes decisions from its outbox, applies SLA fallbacks."""

    def __init__(
        self,
        events: EventBus,
        desk: ApprovalDesk,
        *,
        token_ttl_s: float,
        changes: ChangeSignal,
    ) -> None:
        self._events = events
        self.desk = desk
        self._token_ttl_s = token_ttl_s
        # Wakes the reviewer pages' streams on what this process received, and this loop on what the API decided.
        self._changes = changes
        self.received = 0
        self._queues_seen: set[str] = set()
        self.published = 0

    async def on_event(self, event: Event, record: BusRecord) -> None:
        if not isinstance(event, ApprovalRequested):
            raise RejectedEvent(
                "UNEXPECTED_EVENT", f"the approval service reads ApprovalRequested; got {event.event_type}"
            )
        request = replace(request_of(event), traceparent=tracing.traceparent() or "")
        try:
            added = await self.desk.receive(request)
        except STORE_ERRORS as exc:
            # Not the request's fault: read again later (the partition waits) rather than dead-lettered.
            raise RetryLaterError(f"approval {request.approval_id} could not be stored: {exc!r}") from exc
        if added:
            metrics.APPROVALS_REQUESTED.labels(request.queue).inc()
            self.received += 1
            log.info("approval %s pending in queue %s (%s)", request.approval_id, request.queue, request.action.tool)
            self._changes.changed()

    async def publish_decided(self) -> int:
        """Publish every stored decision not yet acknowledged, then mark it published; returns how many. Each on
        its own: one that cannot be published now is tried again next sweep and holds up no other."""
        sent = 0
        for approval in await self.desk.unpublished():
            try:
                with tracing.joined(approval.request.traceparent):
                    await self._events.publish(topics.APPROVAL_DECISIONS, self._decided_event(approval))
                await self.desk.mark_published(approval.approval_id)
                decision = _DECISION[approval.state].value.lower()
                metrics.APPROVALS_DECIDED.labels(approval.queue, decision).inc()
                if approval.decided_at is not None:
                    metrics.APPROVAL_WAIT.labels(approval.queue).observe(
                        max(0.0, approval.decided_at - approval.request.requested_at)
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("decision on approval %s not published yet (%r): next sweep", approval.approval_id, exc)
                continue
            sent += 1
        self.published += sent
        return sent

    async def count_pending(self) -> None:
        """Set the pending gauge per queue (every sweep; a queue emptied since shows 0)."""
        pending = Counter(a.queue for a in await self.desk.pending())
        for queue in self._queues_seen - pending.keys():
            metrics.APPROVALS_PENDING.labels(queue).set(0)
        for queue, count in pending.items():
            metrics.APPROVALS_PENDING.labels(queue).set(count)
        self._queues_seen |= pending.keys()

    async def run(self, sweep_s: float) -> None:
        """Forever: apply SLA fallbacks that fell due, publish what was decided (at once when something changed
        here, e.g. a reviewer decided through the API; other replicas' decisions at the next sweep)."""
        with self._changes.subscribe() as woken:
            while True:
                woken.clear()
                try:
                    if await self.desk.expire_due():
                        self._changes.changed()
                    await self.publish_decided()
                    await self.count_pending()
                except (RetryLaterError, OSError, sqlite3.Error, PyMongoError) as exc:
                    log.warning("approval decisions not published yet (%r); trying again in %.1fs", exc, sweep_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), sweep_s)

    def _decided_event(self, approval: Approval) -> ApprovalDecided:
        action = approval.request.action
        decision = _DECISION[approval.state]
        token = ""
        if decision is ApprovalDecision.APPROVED:
            decided_at = approval.decided_at or datetime.now(UTC).timestamp()
            token = issue_approval_token(
                self._events.trust.identity,
                approval_id=approval.approval_id,
                action_digest=approval.digest,
                decided_by=approval.decided_by,
                expires_at=decided_at + self._token_ttl_s,
            )
        envelope = self._events.envelope(
            workflow_id=action.workflow_id, tenant_id=action.tenant_id, step_seq=action.step_version
        )
        return ApprovalDecided(
            envelope=envelope.model_copy(update={"event_id": stable_event_id(approval.approval_id, "decided")}),
            approval_id=approval.approval_id,
            decision=decision,
            decided_by=list(approval.decided_by),
            comment=_clip(approval.comment),
            action_digest=approval.digest,
            call_id=action.idempotency_key,
            queue=approval.queue,
            approval_token=token,
        )


def _clip(comment: str | None) -> str | None:
    if comment is None or len(comment) <= MAX_COMMENT_CHARS:
        return comment
    return comment[: MAX_COMMENT_CHARS - 1] + "…"
