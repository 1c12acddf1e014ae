"""Per-tenant daily spend: reserved before a call, settled after it, alerts at 50 % and 80 %, a hard stop at 100 %.

A reservation counts against the limit from the moment it is made, so concurrent requests cannot overrun it:
the sum of what is reserved and what was spent never exceeds the limit. Exact across guard replicas when one
replica owns a tenant's account (requests keyed by tenant, one consumer per partition), which this class assumes:
it is the owner's in-memory account. Making it survive a restart (rebuilt from the guard's own spend events) is
the guard service's part, not written yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

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


@dataclass
class _Account:
    spent: float = 0.0
    reserved: dict[str, float] = field(default_factory=dict)
    alerted: set[float] = field(default_factory=set)
    charged: set[str] = field(default_factory=set)

    @property
    def committed(self) -> float:
        return self.spent + sum(self.reserved.values())


class SpendLimits:
    """Daily accounts per tenant against each tenant's limit (in USD)."""

    def __init__(self, limits_usd: dict[str, float], *, default_limit_usd: float | None = None) -> None:
        self._limits = dict(limits_usd)
        self._default = default_limit_usd
        self._accounts: dict[tuple[str, str], _Account] = {}

    def limit_of(self, tenant_id: str) -> float | None:
        return self._limits.get(tenant_id, self._default)

    def _account(self, tenant_id: str, day: str) -> _Account:
        # One day's accounts are kept; older days are dropped, so memory stays bounded by the tenants.
        for key in [k for k in self._accounts if k[1] < day]:
            del self._accounts[key]
        return self._accounts.setdefault((tenant_id, day), _Account())

    def reserve(self, reservation_id: str, tenant_id: str, day: str, amount_usd: float) -> tuple[SpendVerdict, str]:
        """Hold amount_usd for a call, or refuse it when it would take the day's committed spend over the limit.
        Reserving the same id twice holds it once (a redelivered request)."""
        limit = self.limit_of(tenant_id)
        account = self._account(tenant_id, day)
        if reservation_id in account.reserved or reservation_id in account.charged:
            return SpendVerdict.RESERVED, "already reserved"
        if limit is None:
            return SpendVerdict.OVER_LIMIT, f"tenant {tenant_id!r} has no spend limit configured: nothing is spent"
        if account.committed + amount_usd > limit + 1e-9:
            return (
                SpendVerdict.OVER_LIMIT,
                f"tenant {tenant_id!r} has {account.committed:.4f} of {limit:.2f} USD spent or reserved today; "
                f"{amount_usd:.4f} more would pass the limit: stopped until tomorrow or a higher limit",
            )
        account.reserved[reservation_id] = amount_usd
        return SpendVerdict.RESERVED, f"{amount_usd:.4f} USD reserved"

    def settle(self, reservation_id: str, tenant_id: str, day: str, actual_usd: float) -> list[SpendAlert]:
        """Replace a reservation by what the call actually cost (which may be less, or — a model that overran its
        estimate — more); returns the alerts crossed for the first time. Settling twice counts once."""
        account = self._account(tenant_id, day)
        if reservation_id not in account.reserved:
            return []
        del account.reserved[reservation_id]
        account.charged.add(reservation_id)
        account.spent += actual_usd
        return self._alerts(tenant_id, day, account)

    def charge(self, charge_id: str, tenant_id: str, day: str, amount_usd: float) -> list[SpendAlert]:
        """Count spend that already happened (model tokens used): no reservation, counted once per charge id,
        even past the limit (it was spent); returns the alerts crossed for the first time."""
        account = self._account(tenant_id, day)
        if charge_id in account.charged:
            return []
        account.charged.add(charge_id)
        account.spent += amount_usd
        return self._alerts(tenant_id, day, account)

    def release(self, reservation_id: str, tenant_id: str, day: str) -> None:
        """A reserved call that did not happen (denied later, or failed before acting)."""
        self._account(tenant_id, day).reserved.pop(reservation_id, None)

    def spent(self, tenant_id: str, day: str) -> float:
        return self._account(tenant_id, day).spent

    def _alerts(self, tenant_id: str, day: str, account: _Account) -> list[SpendAlert]:
        limit = self.limit_of(tenant_id)
        if not limit:
            return []
        out: list[SpendAlert] = []
        for share in (*ALERT_SHARES, 1.0):
            if account.spent + 1e-9 >= share * limit and share not in account.alerted:
                account.alerted.add(share)
                out.append(SpendAlert(tenant_id, day, share, account.spent, limit))
        return out
