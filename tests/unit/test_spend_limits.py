"""Per-tenant daily spend: concurrent reservations never overrun the limit; alerts once each at 50 %, 80 %, 100 %."""

from __future__ import annotations

import random

from baton.policy.spend import SpendLimits, SpendVerdict


def test_concurrent_requests_cannot_overrun_the_limit_and_each_alert_fires_once() -> None:
    limits = SpendLimits({"acme": 10.0})
    rnd = random.Random(3)
    pending: list[tuple[str, float]] = []
    alerts = []
    refused = 0
    # 100 workflows' calls interleaved: reservations are made before earlier calls settle.
    for i in range(100):
        estimate = 0.25
        verdict, _ = limits.reserve(f"r{i}", "acme", "2026-11-23", estimate)
        if verdict is SpendVerdict.RESERVED:
            pending.append((f"r{i}", estimate))
        else:
            refused += 1
        if pending and rnd.random() < 0.5:
            rid, est = pending.pop(rnd.randrange(len(pending)))
            alerts += limits.settle(rid, "acme", "2026-11-23", est * rnd.choice([0.5, 1.0]))
    for rid, est in pending:
        alerts += limits.settle(rid, "acme", "2026-11-23", est)
    spent = limits.spent("acme", "2026-11-23")
    assert spent <= 10.0 + 1e-9
    assert refused > 0
    # Each threshold the spend reached alerted exactly once, in order, and none it did not reach.
    assert [a.share for a in alerts] == [s for s in (0.5, 0.8, 1.0) if spent + 1e-9 >= s * 10.0]
    assert [a.share for a in alerts][:2] == [0.5, 0.8]


def test_a_redelivered_reservation_or_settlement_counts_once() -> None:
    limits = SpendLimits({"acme": 1.0})
    assert limits.reserve("r1", "acme", "d", 0.6)[0] is SpendVerdict.RESERVED
    assert limits.reserve("r1", "acme", "d", 0.6)[0] is SpendVerdict.RESERVED
    assert limits.reserve("r2", "acme", "d", 0.6)[0] is SpendVerdict.OVER_LIMIT  # 0.6 is still held by r1
    assert [a.share for a in limits.settle("r1", "acme", "d", 0.6)] == [0.5]
    assert limits.settle("r1", "acme", "d", 0.6) == []
    assert limits.spent("acme", "d") == 0.6


def test_a_released_reservation_frees_its_share_and_a_tenant_without_a_limit_spends_nothing() -> None:
    limits = SpendLimits({"acme": 1.0})
    limits.reserve("r1", "acme", "d", 0.9)
    limits.release("r1", "acme", "d")
    assert limits.reserve("r2", "acme", "d", 0.9)[0] is SpendVerdict.RESERVED
    verdict, reason = limits.reserve("r3", "globex", "d", 0.01)
    assert verdict is SpendVerdict.OVER_LIMIT and "no spend limit configured" in reason


def test_a_new_day_starts_from_zero_and_old_days_are_forgotten() -> None:
    limits = SpendLimits({"acme": 1.0})
    limits.reserve("r1", "acme", "2026-11-23", 1.0)
    limits.settle("r1", "acme", "2026-11-23", 1.0)
    assert limits.reserve("r2", "acme", "2026-11-24", 1.0)[0] is SpendVerdict.RESERVED
    assert ("acme", "2026-11-23") not in limits._accounts
