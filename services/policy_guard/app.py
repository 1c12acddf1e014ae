"""Policy guard service: wiring only."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import cast

from baton import topics
from baton.bus.base import Subscription
from baton.messaging import EventBus, consume
from baton.policy.decisions import Policies, PolicyLoadError
from baton.policy.guard import OwnerOf, Prices, ToolCallGuard
from baton.policy.rates import SlidingWindowLimiter
from baton.policy.spend import SpendLimits
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

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()


def build_guard(events: EventBus, settings: Settings, *, owner_of: OwnerOf | None = None) -> ToolCallGuard:
    """The guard's rules over the declarations and policies beside them, signing grants as this process."""
    try:
        # Policies beside the declarations; a workflow directory without any gets Baton's default set.
        policies = Policies.load(default_workflow_dir(), fallback=True)
    except PolicyLoadError as exc:
        raise ServiceConfigError(f"the policy guard cannot start: {exc}") from exc
    log.info("policy guard: policies %s from %s", policies.version, policies.source)
    return ToolCallGuard(
        workflows=load_workflows(),
        policies=policies,
        signer=events.trust.identity,
        spend=SpendLimits(settings.daily_limit_usd, default_limit_usd=settings.default_daily_limit_usd),
        prices=Prices(settings.tool_cost_usd, settings.default_tool_cost_usd, settings.usd_per_1k_tokens),
        rate=SlidingWindowLimiter(settings.tool_calls_per_window, settings.rate_window_s),
        owner_of=owner_of,
        grant_ttl_s=settings.grant_ttl_s,
        remember=settings.remember_verdicts,
    )


def load_owner_hook(spec: str) -> OwnerOf:
    """`module:function` -> the function (a clear error naming the setting when it cannot be loaded)."""
    module_name, _, name = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ServiceConfigError(
            f"BATON_POLICY_GUARD_OWNERS={spec!r} cannot be loaded ({exc}): name a function as module:function"
        ) from exc
    if not callable(hook):
        raise ServiceConfigError(f"BATON_POLICY_GUARD_OWNERS={spec!r} is not a function")
    return cast(OwnerOf, hook)


async def start(events: EventBus, settings: Settings, *, owner_of: OwnerOf | None = None) -> PolicyGuardApp:
    """Subscribe the guard on a started bus (owner_of, when given, wins over BATON_POLICY_GUARD_OWNERS)."""
    if owner_of is None and settings.owners:
        owner_of = load_owner_hook(settings.owners)
    handlers = PolicyGuardHandlers(events, build_guard(events, settings, owner_of=owner_of))
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
    return PolicyGuardApp(handlers=handlers, subscriptions=[sub])
