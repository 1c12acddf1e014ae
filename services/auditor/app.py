"""Auditor service: wiring only."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from baton import topics
from baton.audit.anchors import AnchorSink, BusAnchorSink, FileAnchorSink, StoreAnchorSink
from baton.audit.store import AuditStore
from baton.bus.base import Subscription
from baton.control import listen
from baton.messaging import EventBus
from baton.telemetry import lag
from baton.workflows import agent_kinds, load_workflows
from services.auditor.config import Settings
from services.auditor.handlers import AuditorHandlers

SERVICE = "auditor"


def audited_topics() -> list[str]:
    """Every Baton topic: the core ones and each agent kind's step topic."""
    return [*topics.CORE_TOPICS, *(topics.agent_steps(k) for k in sorted(agent_kinds(load_workflows())))]


@dataclass
class AuditorApp:
    handlers: AuditorHandlers
    subscriptions: list[Subscription]
    store: AuditStore
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            await self.handlers.anchor()  # seal what was written before shutting down
        finally:
            await self.store.close()


async def start(events: EventBus, settings: Settings) -> AuditorApp:
    """Consume every topic in batches, append them to the audit store, publish signed anchors."""
    signing_key = settings.private_key()  # refuses to start without a real key, before touching anything
    store = settings.build_store()
    await store.setup()
    await events.bus.create_topics([topics.AUDIT_ANCHORS], partitions=1, compacted=True)
    sinks: list[AnchorSink] = [StoreAnchorSink(store), BusAnchorSink(events.bus)]
    if settings.anchor_file is not None:
        sinks.append(FileAnchorSink(settings.anchor_file))
    handlers = AuditorHandlers(
        store,
        events.serde,
        signing_key=signing_key,
        anchor_every=settings.anchor_every,
        auditor_id=events.producer,
        sinks=sinks,
        end_offsets=events.bus.end_offsets,
        keyring=events.trust.keyring,
        tracer=events.tracer,
    )
    wanted = audited_topics()
    await events.bus.create_topics(wanted)
    sub = await events.bus.subscribe_batches(
        wanted,
        group_id=topics.GROUP_AUDITOR,
        handler=handlers.on_batch,
        max_records=settings.batch_size,
        on_assign=handlers.on_assign,
        on_revoke=handlers.on_revoke,
    )
    lag.watch(topics.GROUP_AUDITOR, sub)
    # The auditor records commands like everything else; its listener only says it is running and saw the command.
    control = await listen(events)
    assert control.subscription is not None
    ticker = asyncio.create_task(
        handlers.anchor_when_due(idle_s=settings.anchor_idle_s, max_age_s=settings.anchor_max_age_s),
        name="audit-anchors",
    )
    return AuditorApp(handlers=handlers, subscriptions=[sub, control.subscription], store=store, tasks=[ticker])
