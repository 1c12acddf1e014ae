"""Sliding-window rate limits: exact over any window, a refused event not counted, memory bounded by max_keys."""

from __future__ import annotations

import pytest

from baton.policy.rates import SlidingWindowLimiter


def test_more_than_the_limit_within_any_window_is_refused_until_the_oldest_leaves() -> None:
    limiter = SlidingWindowLimiter(50, 60.0)
    assert all(limiter.allow("agent:kyc", 10.0 + i * 0.1) for i in range(50))
    assert not limiter.allow("agent:kyc", 20.0)  # the 51st call within 60 s
    assert limiter.retry_after_s("agent:kyc", 20.0) == pytest.approx(50.0)  # the first leaves at 70.0
    assert not limiter.allow("agent:kyc", 69.9)
    assert limiter.allow("agent:kyc", 70.0)
    assert limiter.allow("agent:other", 20.0)  # keys are counted apart


def test_no_burst_of_twice_the_limit_across_a_window_boundary() -> None:
    limiter = SlidingWindowLimiter(3, 60.0)
    assert [limiter.allow("t", t) for t in (59.0, 59.5, 59.9)] == [True, True, True]
    assert [limiter.allow("t", t) for t in (60.1, 61.0, 118.9)] == [False, False, False]
    assert limiter.allow("t", 119.0)


def test_a_per_key_limit_overrides_the_limiters_own_and_zero_allows_nothing() -> None:
    limiter = SlidingWindowLimiter(0, 60.0)
    assert [limiter.allow("a", 0.0, limit=2) for _ in range(3)] == [True, True, False]
    assert not limiter.allow("b", 0.0, limit=0)
    assert limiter.retry_after_s("b", 0.0, limit=0) == float("inf")
    assert limiter.retry_after_s("never-seen", 0.0, limit=1) == 0.0


def test_memory_stays_bounded_however_many_keys_come() -> None:
    limiter = SlidingWindowLimiter(1, 60.0, max_keys=100)
    for i in range(10_000):
        limiter.allow(f"key-{i}", float(i))
    assert len(limiter) == 100
    # The least recently used keys went first; one still in use keeps its count.
    busy = SlidingWindowLimiter(1, 60.0, max_keys=2)
    assert busy.allow("busy", 0.0)
    busy.allow("x", 0.0)
    assert not busy.allow("busy", 1.0)  # used again: now the most recent
    busy.allow("y", 1.0)  # evicts x, not busy
    assert not busy.allow("busy", 2.0)
