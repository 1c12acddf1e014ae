"""Policy guard service: wiring only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from baton import topics
from baton.bus.base import Subscription
from baton.control import ControlState, listen
from baton.messaging import EventBus, consume
from baton.policy.decisions import Policies, PolicyLoadError
from baton.policy.guard import ToolCallGuard
from baton.policy.ownership import ResourceOwners, owners_from_config
from baton.policy.rates import SlidingWindowLimiter
from baton.policy.spend import SpendAccounts, SpendStore
from baton.policy.tenants import Prices, TenantConfigError, TenantsConfig, load_tenants_if_present
from baton.runtime import ServiceConfigError
from baton.workflows import default_workflow_dir, load_workflows
from services.policy_guard.config import Settings
from services.policy_guard.handlers import PolicyGuardHandlers

SERVICE = "policy-guard"
log = logging.getLogger(__name__)


@dataclass
class PolicyGuardApp:
    handlers: PolicyGuardHandlers
    subscriptions: list[Subscription]
    spend_store: SpendStore | None = None

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()
        if self.spend_store is not None:
            await self.spend_store.close()


def spend_store(settings: Settings) -> SpendStore:
    """The store of the tenants' daily accounts the settings name (not set up yet)."""
    if settings.spend_store == "mongodb":
        from baton.policy.spend_mongo import MongoSpendStore

        return MongoSpendStore(settings.spend_mongodb_url, database=settings.spend_mongodb_database)
    from baton.policy.spend_sqlite import SqliteSpendStore

    return SqliteSpendStore(settings.spend_sqlite_path)


def _tenants(settings: Settings) -> TenantsConfig | None:
    try:
        return load_tenants_if_present(settings.tenants_file)
    except TenantConfigError as exc:
        raise ServiceConfigError(f"the policy guard cannot start: {exc}") from exc


async def start(events: EventBus, settings: Settings, *, owners: ResourceOwners | None = None) -> PolicyGuardApp:
    """Subscribe the guard on a started bus (owners, when given, wins over tenants.yaml's)."""
    try:
        # Policies beside the declarations; a workflow directory without any gets Baton's default set.
        policies = Policies.load(default_workflow_dir(), fallback=True)
    except PolicyLoadError as exc:
        raise ServiceConfigError(f"the policy guard cannot start: {exc}") from exc
    tenants = _tenants(settings)
    store: SpendStore | None = None
    accounts: SpendAccounts | None = None
    if tenants is None:
        log.warning(
            "policy guard: no tenants.yaml beside the workflows: single-tenant mode, no spend limits and no "
            "cross-tenant check of tool arguments"
        )
    else:
        store = spend_store(settings)
        await store.setup()
        accounts = SpendAccounts(store, tenants.daily_limits_usd())
        if owners is None:
            owners = owners_from_config(tenants)
    guard = ToolCallGuard(
        workflows=load_workflows(),
        policies=policies,
        signer=events.trust.identity,
        keyring=events.trust.keyring,
        spend=accounts,
        prices=tenants.prices if tenants is not None else Prices(default_model_per_1k_tokens_usd=0.0),
        rate=SlidingWindowLimiter(settings.tool_calls_per_window, settings.rate_window_s),
        owners=owners,
        grant_ttl_s=settings.grant_ttl_s,
        approval_ttl_s=settings.approval_sla_s,
        remember=settings.remember_verdicts,
    )
    log.info("policy guard: policies %s from %s", policies.version, policies.source)
    state = ControlState()
    handlers = PolicyGuardHandlers(events, guard, control=state)
    # Before the first request: while a kill is in force no grant is issued in its scope.
    control = await listen(events, state)
    assert control.subscription is not None
    await events.bus.create_topics(
        [
            topics.TOOL_REQUESTS,
            topics.TOOL_VERDICTS,
            topics.DECISIONS,
            topics.GUARD_FLAGS,
            topics.APPROVAL_REQUESTS,
            topics.DEAD_LETTER,
        ]
    )
    sub, _ = await consume(
        events, [topics.TOOL_REQUESTS, topics.DECISIONS], group_id=topics.GROUP_POLICY_GUARD, handler=handlers.on_event
    )
    return PolicyGuardApp(handlers=handlers, subscriptions=[sub, control.subscription], spend_store=store)
