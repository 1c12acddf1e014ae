"""Per-tenant daily spend: reserved before a call, settled after it, alerts at 50 % and 80 %, a hard stop at 100 %.

A reservation counts against the limit from the moment it is made, so concurrent requests cannot overrun it:
the sum of what is reserved and what was spent never exceeds the limit.

`SpendAccounts` over a `SpendStore`: the accounts durable, shared by every guard replica, surviving restarts.
Adapters: `baton.policy.spend_sqlite.SqliteSpendStore` (embedded default) and
  `baton.policy.spend_mongo.MongoSpendStore` (pymongo's async client).

How the limit stays exact with several replicas: one tenant's day is ONE account (a row; in MongoDB the newest
of its versioned documents) holding its spent amount, its open reservations, the reservations recently
finished and the alerts already sent, with a version. Every operation is a pure change of that account
(`reserve_on`, `settle_on`, `release_on`) applied atomically by the store: SQLite inside one `BEGIN IMMEDIATE`
transaction (writers are serialised by the database lock, across processes too); MongoDB by optimistic
concurrency: read the latest version v, compute the change, insert it as version v + 1 under a unique `_id`
(day/tenant#v+1), so exactly one of the replicas racing from v wins and the others read again and recompute,
with jittered backoff. (Not a conditional `replace_one({_id, version: v})`: FerretDB applies that filter and
the write in separate steps, so two replicas could both win; an insert under a unique `_id` is atomic on every
MongoDB-compatible server. See docs/decisions/0018-spend-and-admission.md.) So no two replicas can both reserve
the last dollar, and an alert is returned by exactly the one write that took the spend across its threshold
and recorded it in the same account: once per tenant per day, across restarts and replicas.
Amounts are kept in integer micro-USD, so sums are exact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from baton.telemetry import metrics

ALERT_SHARES = (0.5, 0.8)


class SpendVerdict(StrEnum):
    RESERVED = "RESERVED"
    OVER_LIMIT = "OVER_LIMIT"


@dataclass(frozen=True)
class SpendAlert:
    """A threshold crossed for the first time today (0.5, 0.8, or 1.0 for the hard stop)."""

    tenant_id: str
    day: str
    share: float
    spent_usd: float
    limit_usd: float


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    tenant_id: str
    day: str
    amount_usd: float


# -- durable accounts ---------------------------------------------------------------------------------

MICRO = 1_000_000
# Finished (settled or released) reservation ids kept per account, so a redelivered reservation of a call
# already settled is recognised instead of holding again; bounded so one tenant's record stays small.
FINISHED_KEPT = 500
T = TypeVar("T")


def to_micros(usd: float) -> int:
    return round(usd * MICRO)


@dataclass
class SpendAccount:
    """One tenant's day, as the store keeps it (amounts in micro-USD); version 0: never stored."""

    tenant_id: str
    day: str
    version: int = 0
    spent: int = 0
    reserved: dict[str, int] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    alerted: list[float] = field(default_factory=list)

    @property
    def account_id(self) -> str:
        return account_id(self.tenant_id, self.day)

    @property
    def committed(self) -> int:
        return self.spent + sum(self.reserved.values())

    @property
    def spent_usd(self) -> float:
        return self.spent / MICRO

    def to_doc(self) -> dict[str, Any]:
        """The stored form: reservations as a list of {id, micros} (an id need not be a valid field name, and
        FerretDB stores no nested arrays)."""
        return {
            "tenant_id": self.tenant_id,
            "day": self.day,
            "version": self.version,
            "spent": self.spent,
            "reserved": [{"id": rid, "micros": amount} for rid, amount in self.reserved.items()],
            "finished": list(self.finished),
            "alerted": list(self.alerted),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SpendAccount:
        return cls(
            tenant_id=str(doc["tenant_id"]),
            day=str(doc["day"]),
            version=int(doc["version"]),
            spent=int(doc["spent"]),
            reserved={str(r["id"]): int(r["micros"]) for r in doc["reserved"]},
            finished=[str(r) for r in doc["finished"]],
            alerted=[float(a) for a in doc["alerted"]],
        )

    def copy(self) -> SpendAccount:
        return replace(self, reserved=dict(self.reserved), finished=list(self.finished), alerted=list(self.alerted))


def account_id(tenant_id: str, day: str) -> str:
    """The key of a tenant's day (the day first: it has a fixed form, so no two pairs share a key)."""
    return f"{day}/{tenant_id}"


# A change of one account: the new account (None: unchanged) and what the caller gets back.
AccountChange = Callable[[SpendAccount], tuple[SpendAccount | None, T]]


def reserve_on(
    account: SpendAccount, reservation_id: str, amount_usd: float, limit_usd: float | None
) -> tuple[SpendAccount | None, tuple[SpendVerdict, str]]:
    """Hold amount_usd, or refuse it when it would take the day's committed spend over the limit."""
    if reservation_id in account.reserved:
        return None, (SpendVerdict.RESERVED, "already reserved")
    if reservation_id in account.finished:
        return None, (SpendVerdict.RESERVED, "already settled or released: nothing held again")
    if limit_usd is None:
        return None, (
            SpendVerdict.OVER_LIMIT,
            f"tenant {account.tenant_id!r} has no spend limit configured: nothing is spent",
        )
    amount, limit = to_micros(amount_usd), to_micros(limit_usd)
    if account.committed + amount > limit:
        return None, (
            SpendVerdict.OVER_LIMIT,
            f"tenant {account.tenant_id!r} has {account.committed / MICRO:.4f} of {limit_usd:.2f} USD spent or "
            f"reserved today; {amount_usd:.4f} more would pass the limit: stopped until tomorrow or a higher limit",
        )
    changed = account.copy()
    changed.reserved[reservation_id] = amount
    return changed, (SpendVerdict.RESERVED, f"{amount_usd:.4f} USD reserved")


def _finish(account: SpendAccount, reservation_id: str) -> None:
    del account.reserved[reservation_id]
    account.finished.append(reservation_id)
    del account.finished[:-FINISHED_KEPT]


def settle_on(
    account: SpendAccount, reservation_id: str, actual_usd: float, limit_usd: float | None
) -> tuple[SpendAccount | None, list[SpendAlert]]:
    """Replace a reservation by what the call cost; the alerts this crossed first. Settling twice counts once."""
    if reservation_id not in account.reserved:
        return None, []
    changed = account.copy()
    _finish(changed, reservation_id)
    changed.spent += to_micros(actual_usd)
    alerts: list[SpendAlert] = []
    if limit_usd:
        limit = to_micros(limit_usd)
        for share in (*ALERT_SHARES, 1.0):
            if changed.spent * 10 >= round(share * 10) * limit and share not in changed.alerted:
                changed.alerted.append(share)
                alerts.append(SpendAlert(account.tenant_id, account.day, share, changed.spent_usd, limit_usd))
    return changed, alerts


def release_on(account: SpendAccount, reservation_id: str) -> tuple[SpendAccount | None, None]:
    """Free a reservation whose call did not happen."""
    if reservation_id not in account.reserved:
        return None, None
    changed = account.copy()
    _finish(changed, reservation_id)
    return changed, None


def spend_within_limit_on(
    account: SpendAccount, spend_id: str, amount_usd: float, limit_usd: float | None
) -> tuple[SpendAccount | None, tuple[SpendVerdict, str, list[SpendAlert]]]:
    """Reserve and settle at once a spend whose price is known before it happens (a tool call at its declared
    price): refused when it would pass the limit, counted once per id; the alerts it crossed first."""
    reserved, (verdict, why) = reserve_on(account, spend_id, amount_usd, limit_usd)
    if reserved is None:
        return None, (verdict, why, [])
    settled, alerts = settle_on(reserved, spend_id, amount_usd, limit_usd)
    return settled, (verdict, why, alerts)


def charge_on(
    account: SpendAccount, charge_id: str, amount_usd: float, limit_usd: float | None
) -> tuple[SpendAccount | None, list[SpendAlert]]:
    """Count spend that already happened (model tokens used): no reservation, once per charge id, even past the
    limit (it was spent); the alerts this crossed first."""
    if charge_id in account.reserved or charge_id in account.finished:
        return None, []
    held = account.copy()
    held.reserved[charge_id] = to_micros(amount_usd)
    return settle_on(held, charge_id, amount_usd, limit_usd)


class SpendConflictError(RuntimeError):
    """An account changed by other replicas on every try; the caller may retry the whole request later."""


class SpendStore(Protocol):
    """Where the accounts live; `update` applies a change to one account atomically (see the module docstring)."""

    async def setup(self) -> None:
        """Create what the store needs (tables, indexes); safe to call again."""
        ...

    async def account(self, tenant_id: str, day: str) -> SpendAccount:
        """A tenant's day as stored (a fresh, version-0 account when none is)."""
        ...

    async def update(self, tenant_id: str, day: str, change: AccountChange[T]) -> T:
        """Apply `change` (a pure function, maybe called more than once) atomically; its result."""
        ...

    async def close(self) -> None: ...


class SpendAccounts:
    """Daily accounts per tenant against each tenant's limit (USD), durable in a SpendStore."""

    def __init__(
        self, store: SpendStore, limits_usd: Mapping[str, float], *, default_limit_usd: float | None = None
    ) -> None:
        self.store = store
        self._limits = dict(limits_usd)
        self._default = default_limit_usd

    def limit_of(self, tenant_id: str) -> float | None:
        return self._limits.get(tenant_id, self._default)

    async def reserve(
        self, reservation_id: str, tenant_id: str, day: str, amount_usd: float
    ) -> tuple[SpendVerdict, str]:
        """Hold amount_usd for a call, or refuse it when it would take the day's committed spend over the limit.
        Reserving the same id twice holds it once (a redelivered request)."""
        limit = self.limit_of(tenant_id)
        return await self.store.update(tenant_id, day, lambda a: reserve_on(a, reservation_id, amount_usd, limit))

    async def settle(self, reservation_id: str, tenant_id: str, day: str, actual_usd: float) -> list[SpendAlert]:
        """Replace a reservation by what the call actually cost; the alerts crossed for the first time (each is
        returned to exactly one caller, whichever replica it runs on). Settling twice counts once."""
        limit = self.limit_of(tenant_id)
        return await self.store.update(tenant_id, day, lambda a: settle_on(a, reservation_id, actual_usd, limit))

    async def spend_within_limit(
        self, spend_id: str, tenant_id: str, day: str, amount_usd: float
    ) -> tuple[SpendVerdict, str, list[SpendAlert]]:
        """Reserve and settle a known price in one atomic change (one write instead of two)."""
        limit = self.limit_of(tenant_id)
        return await self.store.update(tenant_id, day, lambda a: spend_within_limit_on(a, spend_id, amount_usd, limit))

    async def charge(self, charge_id: str, tenant_id: str, day: str, amount_usd: float) -> list[SpendAlert]:
        """Count spend that already happened (model tokens used); once per charge id; the alerts crossed first."""
        limit = self.limit_of(tenant_id)
        return await self.store.update(tenant_id, day, lambda a: charge_on(a, charge_id, amount_usd, limit))

    async def release(self, reservation_id: str, tenant_id: str, day: str) -> None:
        """A reserved call that did not happen (denied later, or failed before acting)."""
        await self.store.update(tenant_id, day, lambda a: release_on(a, reservation_id))

    async def spent(self, tenant_id: str, day: str) -> float:
        return (await self.store.account(tenant_id, day)).spent_usd

    async def exhausted(self, tenant_id: str, day: str) -> bool:
        """Whether the tenant's day is at 100 % of its limit (or it has none): nothing more can be spent."""
        limit = self.limit_of(tenant_id)
        if limit is None:
            return True
        return (await self.store.account(tenant_id, day)).spent >= to_micros(limit)


def utc_day(now: float) -> str:
    """The account day of a time (UTC date, e.g. 2026-11-23): limits reset at midnight UTC."""
    return dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()


class ExhaustedTenants:
    """Which tenants have spent today's limit, as a plain callable for task admission (which cannot await):
    refreshed from the accounts by `refresh` (the supervisor calls it every few seconds), so a tenant that
    reaches 100 % has its new tasks rejected within one refresh."""

    def __init__(self, accounts: SpendAccounts, tenants: Collection[str]) -> None:
        self.accounts = accounts
        self.tenants = list(tenants)
        self._exhausted: frozenset[str] = frozenset()

    def __call__(self, tenant_id: str) -> bool:
        return tenant_id in self._exhausted

    async def refresh(self, now: float) -> None:
        day = utc_day(now)
        self._exhausted = frozenset([t for t in self.tenants if await self.accounts.exhausted(t, day)])
        for tenant in self.tenants:
            limit = self.accounts.limit_of(tenant)
            if limit:
                metrics.TENANT_SPEND_RATIO.labels(tenant).set(await self.accounts.spent(tenant, day) / limit)
