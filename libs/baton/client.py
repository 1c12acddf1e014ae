"""Client for upstream systems: publish tasks, subscribe to outcomes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from baton import topics
from baton.bus.base import BusRecord, Subscription
from baton.contracts.models import Event, TaskRequested, WorkflowCompleted, WorkflowEscalated, WorkflowHalted
from baton.messaging import EventBus, EventConsumer
from baton.runtime import RuntimeSettings, build_events

Outcome = WorkflowCompleted | WorkflowHalted | WorkflowEscalated


class BatonClient:
    """Publishes TaskRequested events and yields workflow outcomes; schemas and registry handled."""

    def __init__(self, events: EventBus, *, requested_by: str = "baton.client") -> None:
        self.events = events
        self._requested_by = requested_by

    @classmethod
    def from_settings(cls, settings: RuntimeSettings | None = None, *, name: str = "baton-client") -> BatonClient:
        return cls(build_events(settings or RuntimeSettings(), service=name), requested_by=name)

    async def start(self) -> None:
        await self.events.bus.start()
        await self.events.bus.create_topics([topics.TASKS, topics.OUTCOMES])

    async def stop(self) -> None:
        await self.events.bus.stop()

    async def submit(
        self,
        workflow_type: str,
        context: Mapping[str, Any],
        *,
        tenant_id: str,
        workflow_id: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Ask Baton to run a workflow; returns its workflow id (generated when not given)."""
        wf = workflow_id or f"wf-{uuid.uuid4()}"
        task = TaskRequested(
            envelope=self.events.envelope(workflow_id=wf, tenant_id=tenant_id),
            workflow_type=workflow_type,
            input_json=json.dumps(dict(context)),
            requested_by=self._requested_by,
            labels=dict(labels or {}),
        )
        await self.events.publish(topics.TASKS, task)
        return wf

    async def outcomes(self, *, group_id: str | None = None) -> AsyncIterator[Outcome]:
        """Yield each workflow outcome once (deduplicated by event id); group_id None reads from the start."""
        queue: asyncio.Queue[Outcome] = asyncio.Queue()
        seen: set[str] = set()

        async def on_outcome(event: Event, record: BusRecord) -> None:
            outcome = isinstance(event, WorkflowCompleted | WorkflowHalted | WorkflowEscalated)
            if outcome and event.envelope.event_id not in seen:
                seen.add(event.envelope.event_id)
                await queue.put(event)  # type: ignore[arg-type]

        consumer = EventConsumer(self.events, group_id=group_id or "baton.client.outcomes", handler=on_outcome)
        sub: Subscription = await self.events.bus.subscribe([topics.OUTCOMES], group_id=group_id, handler=consumer)
        try:
            while True:
                yield await queue.get()
        finally:
            await sub.stop()
