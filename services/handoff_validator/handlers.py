"""Handoff validator handlers: decode, verify, publish the verdict."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from baton import topics
from baton.bus.base import BusRecord
from baton.contracts.models import (
    Event,
    FailureClass,
    HandoffAccepted,
    HandoffProposed,
    HandoffRejected,
    WorkflowCheckpointed,
)
from baton.handoff import CheckpointView, verify_handoff
from baton.messaging import EventBus, RejectedEvent
from baton.workflows import END


class HandoffValidatorHandlers:
    """Consumes proposals (and the checkpoint feed) and emits verdicts."""

    def __init__(
        self,
        events: EventBus,
        *,
        view: CheckpointView,
        required_inputs: Mapping[str, Sequence[str]],
        max_context_bytes: int,
        checkpoint_wait_s: float,
    ) -> None:
        self._events = events
        self._view = view
        self._required = required_inputs
        self._max_bytes = max_context_bytes
        self._wait_s = checkpoint_wait_s
        self.accepted = 0
        self.rejected = 0

    async def on_checkpoint(self, event: Event, record: BusRecord) -> None:
        """Keep the latest checkpoint of every workflow."""
        if isinstance(event, WorkflowCheckpointed):
            self._view.update(event)

    async def on_proposal(self, event: Event, record: BusRecord) -> None:
        """Verify one handoff proposal and publish its verdict."""
        if not isinstance(event, HandoffProposed):
            raise RejectedEvent(
                "UNEXPECTED_EVENT",
                f"{record.topic} carries HandoffProposed events only, got {event.event_type}: "
                "publish it to its own topic",
            )
        snap = event.snapshot
        checkpoint = await self._view.wait_for(event.envelope.workflow_id, snap.version - 1, self._wait_s)
        verdict = verify_handoff(
            event,
            checkpoint=checkpoint,
            required_inputs=self._required.get(event.to_agent, ()),
            max_bytes=self._max_bytes,
        )
        # Deterministic ids: a redelivered proposal yields the same verdict event, which consumers dedupe.
        envelope = self._events.envelope(cause=event).model_copy(
            update={"event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"baton-verdict:{event.envelope.event_id}"))}
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
            if event.to_agent != END:
                await self._events.publish(topics.agent_steps(event.to_agent), accepted)
            await self._events.publish(topics.HANDOFF_VERDICTS, accepted)
            return
        self.rejected += 1
        assert verdict.code is not None
        await self._events.publish(
            topics.HANDOFF_VERDICTS,
            HandoffRejected(
                envelope=envelope,
                from_agent=event.from_agent,
                to_agent=event.to_agent,
                reason_code=verdict.code,
                reason=verdict.reason,
                failure_class=FailureClass.CONTEXT,
                proposed_sha256=snap.sha256,
                expected_parent_sha256=checkpoint.sha256 if checkpoint is not None else None,
            ),
        )
