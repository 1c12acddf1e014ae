"""Task admission: whether a requested task may start, decided before it costs a single model call.

In order, a task is rejected when its workflow type is not declared (UNKNOWN_WORKFLOW), its tenant is not in
tenants.yaml (UNKNOWN_TENANT) or not active (TENANT_INACTIVE), its input names a record of another tenant
(CROSS_TENANT), its tenant's day is at 100 % of its spend limit (SPEND_EXHAUSTED), or its tenant submitted
`tasks_per_minute` tasks in the last 60 s (RATE_LIMITED). Only an admitted task counts against the rate, so a
tenant flooding rejected tasks does not lock itself out of the ones that would run.

`admit` is a pure function of its arguments but for the rate limiter, which counts the admitted task. The
supervisor calls it through `TaskAdmission` (see Supervisor's `admit` hook); an outcome code is the rejection
code prefixed `ADMISSION_`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from baton.policy.ownership import ResourceOwners, cross_tenant
from baton.policy.rates import SlidingWindowLimiter
from baton.policy.tenants import TenantsConfig

RATE_WINDOW_S = 60.0


class RejectionCode(StrEnum):
    UNKNOWN_WORKFLOW = "UNKNOWN_WORKFLOW"
    UNKNOWN_TENANT = "UNKNOWN_TENANT"
    TENANT_INACTIVE = "TENANT_INACTIVE"
    CROSS_TENANT = "CROSS_TENANT"
    SPEND_EXHAUSTED = "SPEND_EXHAUSTED"
    RATE_LIMITED = "RATE_LIMITED"


@dataclass(frozen=True)
class TaskFact:
    """What admission looks at in a TaskRequested: its workflow type, its tenant and its (parsed) input."""

    workflow_type: str
    tenant_id: str
    input: Mapping[str, Any]


@dataclass(frozen=True)
class Admitted:
    pass


@dataclass(frozen=True)
class Rejected:
    """Why a task may not start, and what to do about it."""

    code: RejectionCode
    reason: str

    @property
    def outcome_code(self) -> str:
        """The reason code of the WorkflowHalted the task gets."""
        return f"ADMISSION_{self.code.value}"


def tenant_rate_limiter(*, max_keys: int = 100_000) -> SlidingWindowLimiter:
    """The limiter `admit` counts tasks in (per tenant, over 60 s; each tenant's limit is its tasks_per_minute)."""
    return SlidingWindowLimiter(0, RATE_WINDOW_S, max_keys=max_keys)


def admit(
    task: TaskFact,
    *,
    workflows: Collection[str],
    tenants: TenantsConfig,
    owners: ResourceOwners,
    rates: SlidingWindowLimiter,
    spend_exhausted: Callable[[str], bool],
    now: float,
) -> Admitted | Rejected:
    """Admit a task, or reject it with the first rule it breaks (see the module docstring for the order)."""
    if task.workflow_type not in workflows:
        return Rejected(
            RejectionCode.UNKNOWN_WORKFLOW,
            f"workflow type {task.workflow_type!r} is not declared; declared types: {sorted(workflows)}",
        )
    tenant = tenants.tenant(task.tenant_id)
    if tenant is None:
        return Rejected(
            RejectionCode.UNKNOWN_TENANT,
            f"tenant {task.tenant_id!r} is not in tenants.yaml: submit under a known tenant, or add it there",
        )
    if not tenant.active:
        return Rejected(
            RejectionCode.TENANT_INACTIVE,
            f"tenant {task.tenant_id!r} is inactive: its tasks do not run until tenants.yaml sets it active",
        )
    problems = cross_tenant(task.input, task.tenant_id, owners)
    if problems:
        return Rejected(RejectionCode.CROSS_TENANT, "; ".join(problems))
    if spend_exhausted(task.tenant_id):
        return Rejected(
            RejectionCode.SPEND_EXHAUSTED,
            f"tenant {task.tenant_id!r} has spent its daily limit of {tenant.daily_spend_limit_usd:.2f} USD: "
            "submit again tomorrow (UTC) or raise daily_spend_limit_usd in tenants.yaml",
        )
    if not rates.allow(task.tenant_id, now, limit=tenant.tasks_per_minute):
        wait = rates.retry_after_s(task.tenant_id, now, limit=tenant.tasks_per_minute)
        when = f"in {wait:.1f} s" if wait != float("inf") else "once tenants.yaml allows it more than 0"
        return Rejected(
            RejectionCode.RATE_LIMITED,
            f"tenant {task.tenant_id!r} submitted {tenant.tasks_per_minute} tasks in the last "
            f"{RATE_WINDOW_S:.0f} s, its tasks_per_minute: submit again {when}",
        )
    return Admitted()


class TaskAdmission:
    """The supervisor's admission hook: `admission(workflow_type, tenant_id, input, now)` -> Rejected or None."""

    def __init__(
        self,
        *,
        workflows: Collection[str],
        tenants: TenantsConfig,
        owners: ResourceOwners,
        spend_exhausted: Callable[[str], bool] = lambda _tenant: False,
        rates: SlidingWindowLimiter | None = None,
    ) -> None:
        self.workflows = frozenset(workflows)
        self.tenants = tenants
        self.owners = owners
        self.spend_exhausted = spend_exhausted
        self.rates = rates if rates is not None else tenant_rate_limiter()

    def __call__(
        self, workflow_type: str, tenant_id: str, task_input: Mapping[str, Any], now: float
    ) -> Rejected | None:
        decided = admit(
            TaskFact(workflow_type, tenant_id, task_input),
            workflows=self.workflows,
            tenants=self.tenants,
            owners=self.owners,
            rates=self.rates,
            spend_exhausted=self.spend_exhausted,
            now=now,
        )
        return decided if isinstance(decided, Rejected) else None
