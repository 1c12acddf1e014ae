"""Supervisor service: wiring only."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from baton import topics
from baton.bus.base import Subscription
from baton.control import ControlState, listen
from baton.messaging import EventBus, consume
from baton.runtime import keep_running
from baton.supervisor import Supervisor
from baton.workflows import load_workflows
from services.supervisor.config import Settings
from services.supervisor.handlers import SupervisorHandlers

SERVICE = "supervisor"

INBOX = (topics.TASKS, topics.STEP_RESULTS, topics.HANDOFF_VERDICTS)


@dataclass
class SupervisorApp:
    handlers: SupervisorHandlers
    subscriptions: list[Subscription]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self.subscriptions:
            await sub.stop()


async def _sweeper(handlers: SupervisorHandlers, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await handlers.sweep()


async def start(events: EventBus, settings: Settings) -> SupervisorApp:
    """Consume the inbox; each replica restores the workflows of the partitions it is assigned, when
    they are assigned, from the (compacted) checkpoints topic, before it reads their events."""
    await events.bus.create_topics([*INBOX, topics.OUTCOMES, topics.DEAD_LETTER])
    await events.bus.create_topics([topics.CHECKPOINTS], compacted=True)
    supervisor = Supervisor(
        load_workflows(),
        backoff_base_s=settings.backoff_base_s,
        backoff_cap_s=settings.backoff_cap_s,
        max_context_bytes=settings.max_context_bytes,
        finished_capacity=settings.finished_capacity,
    )
    handlers = SupervisorHandlers(events, supervisor, stall_after_s=settings.stall_after_s, control=ControlState())
    assert handlers.control is not None
    # Before the inbox: a task that arrives while a kill is in force is refused.
    control = await listen(events, handlers.control, on_command=handlers.on_control)
    assert control.subscription is not None
    inbox, _ = await consume(
        events,
        list(INBOX),
        group_id=topics.GROUP_SUPERVISOR,
        handler=handlers.on_event,
        on_assign=handlers.on_assign,
        on_revoke=handlers.on_revoke,
    )
    loops = [
        asyncio.create_task(keep_running("wall-clock sweep", lambda: _sweeper(handlers, settings.sweep_interval_s))),
        asyncio.create_task(keep_running("delayed retries", handlers.run_retries)),
    ]
    return SupervisorApp(handlers=handlers, subscriptions=[inbox, control.subscription], tasks=loops)
