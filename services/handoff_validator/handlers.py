"""Handoff validator handlers: decode, verify, publish the verdict."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from opentelemetry import trace

from baton import topics
from baton.bus.base import BusRecord, RetryLaterError
from baton.context import DEFAULT_MAX_CONTEXT_DEPTH
from baton.contracts.models import (
    Event,
    FailureClass,
    HandoffAccepted,
    HandoffProposed,
    HandoffRejected,
    WorkflowCheckpointed,
    stable_event_id,
)
from baton.control import ControlState
from baton.handoff import CheckpointFacts, CheckpointView, HandoffVerdict, VerifiedContexts, verify_handoff
from baton.messaging import EventBus, RejectedEvent
from baton.receipts import ToolReceipts
from baton.telemetry import metrics, tracing
from baton.workflows import WorkflowSpec


class HandoffValidatorHandlers:
    """Consumes proposals (and the checkpoint feed) and emits verdicts."""

    def __init__(
        self,
        events: EventBus,
        *,
        view: CheckpointView,
        required_inputs: Mapping[str, Sequence[str]],
        workflows: Mapping[str, WorkflowSpec],
        max_context_bytes: int,
        checkpoint_wait_s: float,
        receipts: ToolReceipts | None = None,
        max_context_depth: int = DEFAULT_MAX_CONTEXT_DEPTH,
        judged_capacity: int = 10_000,
        control: ControlState | None = None,
    ) -> None:
        self._events = events
        self._control = control
        self.ignored_killed = 0
        self._view = view
        self._required = required_inputs
        self._workflows = workflows
        self.receipts = receipts
        self._max_bytes = max_context_bytes
        self._max_depth = max_context_depth
        self._wait_s = checkpoint_wait_s
        self.accepted = 0
        self.rejected = 0
        # Verdicts already published, to re-emit them byte for byte to a redelivered proposal; bounded.
        self._judged: OrderedDict[str, bytes] = OrderedDict()
        self._judged_capacity = judged_capacity
        # Contexts proven canonical (accepted proposals, parsed checkpoints): a checkpoint is usually the
        # context accepted just before, so only what the next agent changed is encoded again.
        self._verified = VerifiedContexts()

    @property
    def control(self) -> ControlState | None:
        return self._control

    @property
    def view(self) -> CheckpointView:
        return self._view

    async def _publish_verdict(self, judged_as: str, verdict: Event) -> None:
        data = await self._events.publish(topics.HANDOFF_VERDICTS, verdict)
        self._judged[judged_as] = data
        while len(self._judged) > self._judged_capacity:
            self._judged.popitem(last=False)

    async def on_checkpoint(self, event: Event, record: BusRecord) -> None:
        """Keep the latest checkpoint of every running workflow."""
        if isinstance(event, WorkflowCheckpointed):
            self._view.update(event)

    async def _checkpoint_of(self, proposal: HandoffProposed) -> CheckpointFacts | None:
        """The proposal's parent checkpoint: known already, or read by the feed up to now (never a fixed wait)."""
        wf, parent_version = proposal.envelope.workflow_id, proposal.snapshot.version - 1
        known = self._view.facts(wf)
        if known is not None and known.snapshot.version >= parent_version:
            return known
        # The checkpoint was acknowledged before the step ran, so it is in the log by now: wait only
        # until the feed has read that far, then the view's answer is final.
        ends = await self._events.bus.end_offsets(topics.CHECKPOINTS)
        if not await self._view.wait_caught_up(ends, self._wait_s):
            raise RetryLaterError(f"checkpoint feed still behind after {self._wait_s}s; judging {wf} later")
        return self._view.facts(wf)

    async def _verify(self, proposal: HandoffProposed, checkpoint: CheckpointFacts | None) -> HandoffVerdict:
        receipts = None
        if self.receipts is not None:
            receipts = await self.receipts.find({p.call_id for p in proposal.provenance})
        return verify_handoff(
            proposal,
            checkpoint=checkpoint,
            workflow=self._workflows.get(checkpoint.workflow_type) if checkpoint is not None else None,
            required_inputs=self._required.get(proposal.to_agent, ()),
            receipts=receipts,
            max_bytes=self._max_bytes,
            max_depth=self._max_depth,
            verified=self._verified,
        )

    async def on_proposal(self, event: Event, record: BusRecord) -> None:
        """Verify one handoff proposal and publish its verdict."""
        if not isinstance(event, HandoffProposed):
            raise RejectedEvent(
                "UNEXPECTED_EVENT",
                f"{record.topic} carries HandoffProposed events only, got {event.event_type}: "
                "publish it to its own topic",
            )
        if self._control is not None and self._control.blocked(event.envelope.workflow_id, event.envelope.tenant_id):
            # Killed: no verdict moves it on. Its supervisor halts it (it confirms only once it did), and a
            # verdict it is not waiting for any more would only be ignored there.
            self.ignored_killed += 1
            return
        # A proposal is known by its id *and* its exact bytes: another agent reusing a genuine proposal's
        # (predictable) id gets a verdict of its own, and never the genuine proposal's answered for it.
        judged_as = f"{event.envelope.event_id}:{hashlib.sha256(record.value).hexdigest()[:32]}"
        judged = self._judged.get(judged_as)
        if judged is not None:
            # A redelivered or replayed proposal gets the verdict it already got, byte for byte.
            await self._events.publish_encoded(topics.HANDOFF_VERDICTS, judged, workflow_id=event.envelope.workflow_id)
            return
        snap = event.snapshot
        to_agent = metrics.bounded("agent", event.to_agent)  # named by the proposing agent
        metrics.HANDOFFS_PROPOSED.labels(to_agent).inc()
        checkpoint = await self._checkpoint_of(event)
        verdict = await self._verify(event, checkpoint)
        outcome = "accepted" if verdict.accepted and verdict.diff is not None else "rejected"
        metrics.HANDOFFS.labels(to_agent, outcome).inc()
        metrics.HANDOFF_LATENCY.labels(to_agent).observe(max(0.0, time.time() - event.envelope.occurred_at.timestamp()))
        span = trace.get_current_span()
        tracing.set_attributes(
            span,
            {
                "baton.handoff.from_agent": event.from_agent,
                "baton.handoff.to_agent": event.to_agent,
                "baton.handoff.verdict": outcome,
                "baton.handoff.reason": verdict.code,
                "baton.context.version": snap.version,
                "baton.context.sha256": snap.sha256,
                "baton.context.parent_sha256": checkpoint.snapshot.sha256 if checkpoint is not None else None,
                "baton.context.size_bytes": snap.size_bytes,
            },
        )
        if outcome == "rejected":
            metrics.HANDOFF_REJECTIONS.labels(str(verdict.code)).inc()
            tracing.failed(span, str(verdict.code), verdict.reason)
        # Deterministic ids: a redelivered proposal yields the same verdict event, which consumers dedupe.
        envelope = self._events.envelope(cause=event).model_copy(
            update={"event_id": stable_event_id("verdict", judged_as)}
        )
        if verdict.accepted and verdict.diff is not None:
            self.accepted += 1
            accepted = HandoffAccepted(
                envelope=envelope,
                from_agent=event.from_agent,
                to_agent=event.to_agent,
                snapshot=snap,
                diff=verdict.diff,
            )
            await self._publish_verdict(judged_as, accepted)
            return
        self.rejected += 1
        assert verdict.code is not None
        await self._publish_verdict(
            judged_as,
            HandoffRejected(
                envelope=envelope,
                from_agent=event.from_agent,
                to_agent=event.to_agent,
                reason_code=verdict.code,
                reason=verdict.reason,
                failure_class=FailureClass.CONTEXT,
                proposed_sha256=snap.sha256,
                expected_parent_sha256=checkpoint.snapshot.sha256 if checkpoint is not None else None,
            ),
        )
