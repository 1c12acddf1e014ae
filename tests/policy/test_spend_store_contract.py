"""Both spend stores (embedded SQLite, MongoDB over the wire against FerretDB) keep the same accounts: a limit
never passed, even by concurrent reservations from several replicas; redeliveries counted once; each alert
once per tenant per day, across restarts."""

from __future__ import annotations

import asyncio
import itertools

from baton.policy.spend import SpendAccounts, SpendAlert, SpendVerdict, to_micros
from baton.policy.spend_mongo import MongoSpendStore
from tests.policy.conftest import OpenStore

DAY = "2026-11-23"


async def test_a_reservation_over_the_limit_is_refused_and_one_within_is_held(open_store: OpenStore) -> None:
    accounts = SpendAccounts(await open_store(), {"acme": 1.0})
    assert (await accounts.reserve("r1", "acme", DAY, 0.6))[0] is SpendVerdict.RESERVED
    verdict, reason = await accounts.reserve("r2", "acme", DAY, 0.6)
    assert verdict is SpendVerdict.OVER_LIMIT
    assert "0.6000 of 1.00 USD" in reason and "would pass the limit" in reason
    assert (await accounts.reserve("r3", "acme", DAY, 0.4))[0] is SpendVerdict.RESERVED  # exactly the limit


async def test_a_redelivered_reservation_or_settlement_counts_once(open_store: OpenStore) -> None:
    accounts = SpendAccounts(await open_store(), {"acme": 1.0})
    assert (await accounts.reserve("r1", "acme", DAY, 0.6))[0] is SpendVerdict.RESERVED
    assert await accounts.reserve("r1", "acme", DAY, 0.6) == (SpendVerdict.RESERVED, "already reserved")
    assert (await accounts.reserve("r2", "acme", DAY, 0.6))[0] is SpendVerdict.OVER_LIMIT  # r1 still holds 0.6
    # The call cost more than estimated: the actual amount counts.
    assert [a.share for a in await accounts.settle("r1", "acme", DAY, 0.7)] == [0.5]
    assert await accounts.settle("r1", "acme", DAY, 0.7) == []
    assert await accounts.spent("acme", DAY) == 0.7
    # A request redelivered after its call settled holds nothing again.
    verdict, reason = await accounts.reserve("r1", "acme", DAY, 0.6)
    assert verdict is SpendVerdict.RESERVED and "already settled" in reason
    assert (await accounts.reserve("r4", "acme", DAY, 0.3))[0] is SpendVerdict.RESERVED


async def test_a_released_reservation_frees_its_share_and_a_tenant_without_a_limit_spends_nothing(
    open_store: OpenStore,
) -> None:
    accounts = SpendAccounts(await open_store(), {"acme": 1.0})
    await accounts.reserve("r1", "acme", DAY, 0.9)
    await accounts.release("r1", "acme", DAY)
    await accounts.release("r1", "acme", DAY)
    assert (await accounts.reserve("r2", "acme", DAY, 0.9))[0] is SpendVerdict.RESERVED
    assert await accounts.settle("r1", "acme", DAY, 0.9) == []  # released: settling it now counts nothing
    verdict, reason = await accounts.reserve("r3", "globex", DAY, 0.01)
    assert verdict is SpendVerdict.OVER_LIMIT and "no spend limit configured" in reason
    assert await accounts.exhausted("globex", DAY)


async def test_each_day_and_tenant_has_its_own_account(open_store: OpenStore) -> None:
    accounts = SpendAccounts(await open_store(), {"acme": 1.0, "globex": 1.0})
    await accounts.reserve("r1", "acme", DAY, 1.0)
    await accounts.settle("r1", "acme", DAY, 1.0)
    assert await accounts.exhausted("acme", DAY)
    assert (await accounts.reserve("r1", "acme", "2026-11-24", 1.0))[0] is SpendVerdict.RESERVED
    assert (await accounts.reserve("r1", "globex", DAY, 1.0))[0] is SpendVerdict.RESERVED
    assert not await accounts.exhausted("globex", DAY)


async def test_alerts_fire_once_each_across_a_restart(open_store: OpenStore) -> None:
    first = SpendAccounts(await open_store(), {"acme": 10.0})
    await first.reserve("r1", "acme", DAY, 6.0)
    await first.reserve("r2", "acme", DAY, 4.0)
    assert [a.share for a in await first.settle("r1", "acme", DAY, 6.0)] == [0.5]
    await first.store.close()
    # A new replica (or the same after a restart) sees the same account, reservations and alerts included.
    second = SpendAccounts(await open_store(), {"acme": 10.0})
    assert await second.spent("acme", DAY) == 6.0
    assert (await second.reserve("r3", "acme", DAY, 0.5))[0] is SpendVerdict.OVER_LIMIT  # r2 still holds 4.0
    alerts = await second.settle("r2", "acme", DAY, 4.0)
    assert [(a.share, a.spent_usd, a.limit_usd) for a in alerts] == [(0.8, 10.0, 10.0), (1.0, 10.0, 10.0)]
    assert await second.exhausted("acme", DAY)


async def test_concurrent_reservations_from_several_replicas_never_pass_the_limit(open_store: OpenStore) -> None:
    replicas = [SpendAccounts(await open_store(), {"acme": 10.0}) for _ in range(4)]
    pick = itertools.cycle(replicas)
    # 100 calls at once, each estimated at 0.25 USD, spread over the replicas: room for exactly 40.
    calls = [(f"call-{i}", next(pick)) for i in range(100)]
    verdicts = await asyncio.gather(*(a.reserve(rid, "acme", DAY, 0.25) for rid, a in calls))
    held = [call for call, (verdict, _) in zip(calls, verdicts, strict=True) if verdict is SpendVerdict.RESERVED]
    assert len(held) == 40
    account = await replicas[0].store.account("acme", DAY)
    assert account.committed == to_micros(10.0)
    # Redelivered to other replicas while the first ones settle: every call counts once, every alert fires once.
    settled = await asyncio.gather(
        *(a.settle(rid, "acme", DAY, 0.25) for rid, a in held),
        *(b.settle(rid, "acme", DAY, 0.25) for (rid, _a), b in zip(held, reversed(replicas * 10), strict=True)),
    )
    alerts: list[SpendAlert] = [alert for got in settled for alert in got]
    assert sorted(a.share for a in alerts) == [0.5, 0.8, 1.0]
    assert await replicas[1].spent("acme", DAY) == 10.0
    assert (await replicas[2].reserve("late", "acme", DAY, 0.01))[0] is SpendVerdict.OVER_LIMIT
    stores = [r.store for r in replicas]
    if all(isinstance(s, MongoSpendStore) for s in stores):
        # The replicas really raced (and lost writes were redone), so the exact count above is the proof.
        assert sum(s.conflicts for s in stores if isinstance(s, MongoSpendStore)) > 0


async def test_concurrent_calls_that_overrun_their_estimates_still_alert_once(open_store: OpenStore) -> None:
    replicas = [SpendAccounts(await open_store(), {"acme": 5.0}) for _ in range(3)]
    pick = itertools.cycle(replicas)

    async def call(i: int) -> list[SpendAlert]:
        replica = next(pick)
        verdict, _ = await replica.reserve(f"c{i}", "acme", DAY, 0.1)
        if verdict is not SpendVerdict.RESERVED:
            return []
        return await replica.settle(f"c{i}", "acme", DAY, 0.2 if i % 2 else 0.05)

    results = await asyncio.gather(*(call(i) for i in range(100)))
    alerts = [a for got in results for a in got]
    spent = await replicas[0].spent("acme", DAY)
    reached = [s for s in (0.5, 0.8, 1.0) if spent >= s * 5.0]
    assert sorted(a.share for a in alerts) == reached
    assert len({a.share for a in alerts}) == len(alerts)


async def test_known_prices_spent_at_once_by_several_replicas_stop_exactly_at_the_limit(open_store: OpenStore) -> None:
    replicas = [SpendAccounts(await open_store(), {"acme": 10.0}) for _ in range(4)]
    pick = itertools.cycle(replicas)
    calls = [(f"tool-{i}", next(pick)) for i in range(100)]
    # Each call twice (a redelivered request): 40 fit, each counted once, each alert once.
    got = await asyncio.gather(*(a.spend_within_limit(rid, "acme", DAY, 0.25) for rid, a in calls + calls))
    spent = {
        rid
        for (rid, _a), (verdict, _why, _al) in zip(calls + calls, got, strict=True)
        if verdict is SpendVerdict.RESERVED
    }
    assert len(spent) == 40
    assert await replicas[0].spent("acme", DAY) == 10.0
    assert sorted(alert.share for _v, _w, alerts in got for alert in alerts) == [0.5, 0.8, 1.0]
    assert await replicas[3].exhausted("acme", DAY)
