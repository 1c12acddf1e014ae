"""Auditor service: wiring only."""

from __future__ import annotations

from dataclasses import dataclass

from baton import topics
from baton.audit.store import AuditStore
from baton.bus.base import Subscription
from baton.messaging import EventBus
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

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()
        await self.handlers.anchor()  # seal what was written before shutting down
        await self.store.close()


async def start(events: EventBus, settings: Settings) -> AuditorApp:
    """Consume every topic in batches and append them to the audit store."""
    store = settings.build_store()
    await store.setup()
    handlers = AuditorHandlers(
        store, events.serde, key=settings.key, anchor_every=settings.anchor_every, auditor_id=events.producer
    )
    wanted = audited_topics()
    await events.bus.create_topics(wanted)
    sub = await events.bus.subscribe_batches(
        wanted, group_id=topics.GROUP_AUDITOR, handler=handlers.on_batch, max_records=settings.batch_size
    )
    return AuditorApp(handlers=handlers, subscriptions=[sub], store=store)
