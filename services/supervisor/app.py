"""Supervisor service: wiring only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from baton import topics
from baton.bus.base import Subscription
from baton.messaging import EventBus, consume
from baton.supervisor import Supervisor
from baton.workflows import load_workflows
from services.supervisor.config import Settings
from services.supervisor.handlers import SupervisorHandlers

SERVICE = "supervisor"
log = logging.getLogger(__name__)

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
        await self.handlers.stop()


async def _sweeper(handlers: SupervisorHandlers, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await handlers.sweep()
        except Exception:
            log.exception("wall-clock sweep failed; retrying next interval")


async def start(events: EventBus, settings: Settings) -> SupervisorApp:
    """Restore every workflow from its last checkpoint, re-issue owed steps, then consume the inbox."""
    await events.bus.create_topics([*INBOX, topics.CHECKPOINTS, topics.OUTCOMES, topics.DEAD_LETTER])
    supervisor = Supervisor(
        load_workflows(), backoff_base_s=settings.backoff_base_s, backoff_cap_s=settings.backoff_cap_s
    )
    handlers = SupervisorHandlers(events, supervisor)
    restored = await events.bus.replay([topics.CHECKPOINTS], handlers.restore)
    owed = await handlers.resume()
    if restored:
        log.info("restored %d checkpoints; re-issued %d owed steps", restored, owed)
    # Keep following every replica's checkpoints, so partitions that move here in a rebalance
    # continue from the state their previous owner last wrote, not from the start-up replay.
    tail = await events.bus.subscribe([topics.CHECKPOINTS], group_id=None, handler=handlers.restore)
    inbox, _ = await consume(events, list(INBOX), group_id=topics.GROUP_SUPERVISOR, handler=handlers.on_event)
    sweeper = asyncio.create_task(_sweeper(handlers, settings.sweep_interval_s))
    return SupervisorApp(handlers=handlers, subscriptions=[inbox, tail], tasks=[sweeper])
