"""Supervisor service: wiring only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from baton import topics
from baton.anomaly import BehaviourMonitor
from baton.bus.base import Subscription
from baton.control import ControlState, listen
from baton.messaging import EventBus, consume
from baton.policy.admission import TaskAdmission
from baton.policy.ownership import ResourceOwners, owners_from_config
from baton.policy.spend import ExhaustedTenants, SpendAccounts, SpendStore
from baton.policy.tenants import load_tenants_if_present
from baton.runtime import keep_running
from baton.supervisor import Supervisor
from baton.workflows import load_workflows, reviewers_declared
from services.supervisor.config import Settings
from services.supervisor.handlers import SupervisorHandlers

SERVICE = "supervisor"

INBOX = (topics.TASKS, topics.STEP_RESULTS, topics.HANDOFF_VERDICTS, topics.APPROVAL_DECISIONS)


log = logging.getLogger(__name__)


@dataclass
class SupervisorApp:
    handlers: SupervisorHandlers
    subscriptions: list[Subscription]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    spend_store: SpendStore | None = None

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self.subscriptions:
            await sub.stop()
        if self.spend_store is not None:
            await self.spend_store.close()


async def _sweeper(handlers: SupervisorHandlers, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await handlers.sweep()


async def _spend_refresher(exhausted: ExhaustedTenants, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await exhausted.refresh(time.time())


def _spend_store(settings: Settings) -> SpendStore:
    if settings.spend_store == "mongodb":
        from baton.policy.spend_mongo import MongoSpendStore

        return MongoSpendStore(settings.spend_mongodb_url, database=settings.spend_mongodb_database)
    from baton.policy.spend_sqlite import SqliteSpendStore

    return SqliteSpendStore(settings.spend_sqlite_path)


async def admission_of(
    settings: Settings, workflows: Collection[str], *, owners: ResourceOwners | None = None
) -> tuple[TaskAdmission | None, ExhaustedTenants | None]:
    """Task admission as settings ask for it (None: off), and the spend view it reads (None: not read)."""
    if not settings.admission:
        return None, None
    tenants = load_tenants_if_present(settings.tenants_file)
    if tenants is None:
        log.warning("supervisor: no tenants.yaml beside the workflows: single-tenant mode, every task admitted")
        return None, None
    exhausted: ExhaustedTenants | None = None
    if settings.spend_store != "none":
        store = _spend_store(settings)
        await store.setup()
        exhausted = ExhaustedTenants(SpendAccounts(store, tenants.daily_limits_usd()), tenants.tenants)
        await exhausted.refresh(time.time())
    admission = TaskAdmission(
        workflows=workflows,
        tenants=tenants,
        owners=owners if owners is not None else owners_from_config(tenants),
        spend_exhausted=exhausted if exhausted is not None else (lambda _tenant: False),
    )
    return admission, exhausted


async def start(events: EventBus, settings: Settings, *, owners: ResourceOwners | None = None) -> SupervisorApp:
    """Consume the inbox; each replica restores the workflows of the partitions it is assigned, when
    they are assigned, from the (compacted) checkpoints topic, before it reads their events."""
    await events.bus.create_topics([*INBOX, topics.OUTCOMES, topics.ANOMALIES, topics.DEAD_LETTER])
    await events.bus.create_topics([topics.CHECKPOINTS], compacted=True)
    workflows = load_workflows()
    admission, exhausted = await admission_of(settings, workflows, owners=owners)
    supervisor = Supervisor(
        workflows,
        backoff_base_s=settings.backoff_base_s,
        backoff_cap_s=settings.backoff_cap_s,
        max_context_bytes=settings.max_context_bytes,
        finished_capacity=settings.finished_capacity,
        admit=admission,
        await_approvals=(settings.await_approvals if settings.await_approvals is not None else reviewers_declared()),
    )
    handlers = SupervisorHandlers(
        events,
        supervisor,
        stall_after_s=settings.stall_after_s,
        control=ControlState(),
        behaviour=BehaviourMonitor(settings.anomaly_settings()) if settings.anomaly_detection else None,
        halt_on_anomaly=settings.anomaly_halt_on if settings.anomaly_action == "halt" else (),
    )
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
    if exhausted is not None:
        loops.append(
            asyncio.create_task(
                keep_running("spend refresh", lambda: _spend_refresher(exhausted, settings.spend_refresh_s))
            )
        )
    return SupervisorApp(
        handlers=handlers,
        subscriptions=[inbox, control.subscription],
        tasks=loops,
        spend_store=exhausted.accounts.store if exhausted is not None else None,
    )
