"""Client for upstream systems: publish tasks, subscribe to outcomes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from baton import topics
from baton.bus.base import BusRecord, RetryLaterError, Subscription
from baton.contracts.models import Event, TaskRequested, WorkflowCompleted, WorkflowEscalated, WorkflowHalted
from baton.identity import CLIENT
from baton.messaging import EventBus, EventConsumer
from baton.runtime import RuntimeSettings, build_events, build_trust

Outcome = WorkflowCompleted | WorkflowHalted | WorkflowEscalated

_SEEN_CAPACITY = 100_000


class Task(BaseModel):
    """One line of a tasks file (JSON Lines): which workflow to run, for whom, on what input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow_type: str
    input: dict[str, Any] = Field(description="the workflow's initial context")
    tenant: str = "default"
    workflow_id: str | None = None
    idempotency_key: str | None = None


class TaskFileError(ValueError):
    """A tasks file has a line that is not a task; the message names the line."""


def load_tasks(path: Path) -> list[Task]:
    """Every task in a JSON Lines file (blank lines and lines starting with # are skipped)."""
    tasks: list[Task] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            tasks.append(Task.model_validate_json(line))
        except ValidationError as exc:
            raise TaskFileError(
                f"{path}:{number} is not a task: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}; a line is "
                '{"workflow_type": "...", "input": {...}, "tenant": "...", "workflow_id": "..."}'
            ) from exc
    return tasks


class BatonClient:
    """Publishes TaskRequested events and yields workflow outcomes; schemas and registry handled."""

    def __init__(self, events: EventBus, *, requested_by: str = "baton.client") -> None:
        self.events = events
        self._requested_by = requested_by

    @classmethod
    def from_settings(cls, settings: RuntimeSettings | None = None, *, name: str = "baton-client") -> BatonClient:
        settings = settings or RuntimeSettings()
        trust = build_trust(settings, role=CLIENT)  # whatever the client is called, it signs as the client role
        return cls(build_events(settings, service=name, trust=trust), requested_by=name)

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
        idempotency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Ask Baton to run a workflow; returns its workflow id.

        The id is workflow_id when given, else derived from (tenant, idempotency_key), so submitting
        again with the same key (a retry after a timeout) names the same workflow and Baton runs it
        once; without either, a fresh id.
        """
        wf = workflow_id or workflow_id_for(tenant_id, idempotency_key)
        task = TaskRequested(
            envelope=self.events.envelope(workflow_id=wf, tenant_id=tenant_id),
            workflow_type=workflow_type,
            input_json=json.dumps(dict(context)),
            requested_by=self._requested_by,
            labels=dict(labels or {}),
        )
        await self.events.publish(topics.TASKS, task)
        return wf

    async def submit_task(self, task: Task) -> str:
        """Submit one task of a tasks file; returns its workflow id."""
        return await self.submit(
            task.workflow_type,
            task.input,
            tenant_id=task.tenant,
            workflow_id=task.workflow_id,
            idempotency_key=task.idempotency_key,
        )

    async def outcomes(self, *, group_id: str | None = None) -> AsyncGenerator[Outcome, None]:
        """Yield each workflow outcome once (deduplicated by event id); group_id None reads from the start.

        With a group, an outcome's offset is committed only after the caller took it and asked for the
        next one: an outcome the caller never finished with is delivered again to the group.
        """
        queue: asyncio.Queue[tuple[Outcome, asyncio.Future[None]]] = asyncio.Queue(maxsize=1)
        seen: OrderedDict[str, None] = OrderedDict()
        closed = False

        async def on_outcome(event: Event, record: BusRecord) -> None:
            if not isinstance(event, WorkflowCompleted | WorkflowHalted | WorkflowEscalated):
                return
            if event.envelope.event_id in seen:
                return
            if closed:
                raise RetryLaterError("the caller stopped taking outcomes")
            taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # Outcomes of different workflows are handed over concurrently and wait here for their turn.
            await queue.put((event, taken))
            if closed and not taken.done():
                # Queued only after the caller stopped (its drain made room): nobody will take it.
                taken.set_exception(RetryLaterError("the caller stopped before taking this outcome"))
            await taken  # raises when the caller stopped without finishing with it: not committed
            seen[event.envelope.event_id] = None
            while len(seen) > _SEEN_CAPACITY:
                seen.popitem(last=False)

        consumer = EventConsumer(self.events, group_id=group_id or "baton.client.outcomes", handler=on_outcome)
        sub: Subscription = await self.events.bus.subscribe([topics.OUTCOMES], group_id=group_id, handler=consumer)
        pending: asyncio.Future[None] | None = None
        try:
            while True:
                outcome, pending = await queue.get()
                yield outcome
                pending.set_result(None)
                pending = None
        finally:
            closed = True
            if pending is not None and not pending.done():
                pending.set_exception(RetryLaterError("the caller stopped before finishing with this outcome"))
            while not queue.empty():
                _, unseen = queue.get_nowait()
                unseen.set_exception(RetryLaterError("the caller stopped before taking this outcome"))
            await sub.stop()


def workflow_id_for(tenant_id: str, idempotency_key: str | None) -> str:
    """The workflow id a submit names: stable for a (tenant, idempotency key), fresh without a key."""
    if idempotency_key is None:
        return f"wf-{uuid.uuid4()}"
    return f"wf-{uuid.uuid5(uuid.NAMESPACE_URL, f'baton:task:{tenant_id}:{idempotency_key}')}"
