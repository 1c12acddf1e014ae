"""The supervisor's view of spend: which tenants' UTC day is at 100 %, as a plain callable admission can ask."""

from __future__ import annotations

from pathlib import Path

from baton.policy.spend import ExhaustedTenants, SpendAccounts, utc_day
from baton.policy.spend_sqlite import SqliteSpendStore

NOON = 1_795_435_200.0  # 2026-11-23T12:00:00Z


async def test_a_tenant_at_its_limit_is_exhausted_after_a_refresh_and_not_the_next_day(tmp_path: Path) -> None:
    assert utc_day(NOON) == "2026-11-23" and utc_day(NOON + 12 * 3600) == "2026-11-24"
    accounts = SpendAccounts(SqliteSpendStore(tmp_path / "spend.db"), {"acme": 1.0, "globex": 1.0})
    view = ExhaustedTenants(accounts, ["acme", "globex"])
    await accounts.reserve("r1", "acme", utc_day(NOON), 1.0)
    await accounts.settle("r1", "acme", utc_day(NOON), 1.0)
    assert not view("acme")  # not refreshed yet
    await view.refresh(NOON)
    assert view("acme") and not view("globex")
    await view.refresh(NOON + 12 * 3600)
    assert not view("acme")
    await accounts.store.close()
