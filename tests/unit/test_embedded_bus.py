"""The embedded bus's consumer loop: retry backoff, supervision and health, which the contract tests cannot time."""

from __future__ import annotations

import asyncio
import time

import pytest

from baton.bus import embedded
from baton.bus.base import Backoff, BusRecord
from baton.bus.embedded import EmbeddedBus
from tests.harness.collect import Collector

TOPIC, GROUP = "t", "g"


@pytest.fixture
async def bus() -> EmbeddedBus:
    b = EmbeddedBus(partitions=1)
    await b.create_topics([TOPIC])
    return b


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.05, 0.3)
    assert [backoff.failed() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.succeeded()
    assert backoff.failed() == 0.05


async def test_a_failing_handler_is_retried_with_a_short_backoff_and_committed_only_after_success(
    bus: EmbeddedBus,
) -> None:
    committed_at_attempt: list[int] = []
    got: Collector[bytes] = Collector()

    async def down_twice(record: BusRecord) -> None:
        committed_at_attempt.append(bus.committed(GROUP, (TOPIC, 0)))
        if record.value == b"x" and len(committed_at_attempt) <= 2:
            raise ConnectionError("downstream is down")
        await got.add(record.value)

    sub = await bus.subscribe([TOPIC], group_id=GROUP, handler=down_twice)
    started = time.monotonic()
    await bus.publish(TOPIC, b"x", key=b"k")
    await got.wait_for_count(1)
    # 0.05 s then 0.1 s of backoff; a fixed 1 s per retry took 2 s.
    assert time.monotonic() - started < 1.0
    assert committed_at_attempt == [0, 0, 0]
    await bus.publish(TOPIC, b"y", key=b"k")
    await got.wait_for_count(2)
    assert committed_at_attempt == [0, 0, 0, 1]
    await sub.stop()
    assert bus.committed(GROUP, (TOPIC, 0)) == 2


async def test_a_failure_outside_the_handler_is_survived_and_rereads_from_the_committed_offset(
    bus: EmbeddedBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = bus.commit
    refusals = 3
    failing = asyncio.Event()
    both_committed = asyncio.Event()

    def commit(group_id: str | None, tp: tuple[str, int], offset: int) -> None:
        nonlocal refusals
        if refusals:
            refusals -= 1
            failing.set()
            raise RuntimeError("injected: the commit store is down")
        real_commit(group_id, tp, offset)
        if offset == 2:
            both_committed.set()

    monkeypatch.setattr(bus, "commit", commit)
    got: Collector[bytes] = Collector()

    async def keep(record: BusRecord) -> None:
        await got.add(record.value)

    sub = await bus.subscribe([TOPIC], group_id=GROUP, handler=keep)
    assert sub.healthy
    await bus.publish(TOPIC, b"x", key=b"k")
    await failing.wait()
    assert not sub.healthy
    await bus.publish(TOPIC, b"y", key=b"k")
    await got.wait_until(lambda items: b"y" in items)
    await asyncio.wait_for(both_committed.wait(), 5)
    # Each poll re-reads from the committed offset: x on every attempt whose commit failed, then once
    # more; y (read with x once it was published) always after x, in order. Nothing was skipped.
    assert got.items.count(b"x") == 4
    assert all(got.items[i - 1] == b"x" for i, item in enumerate(got.items) if item == b"y")
    assert got.items[-1] == b"y"
    assert sub.healthy


async def test_a_failing_on_assign_is_retried_and_no_record_is_handled_before_it_succeeded(bus: EmbeddedBus) -> None:
    await bus.publish(TOPIC, b"x", key=b"k")
    attempts = 0
    restored = False
    got: Collector[bool] = Collector()

    async def restore(partitions: frozenset[tuple[str, int]]) -> None:
        nonlocal attempts, restored
        attempts += 1
        if attempts == 1:
            raise ConnectionError("state store is down")
        restored = True

    async def handle(record: BusRecord) -> None:
        await got.add(restored)

    await bus.subscribe([TOPIC], group_id=GROUP, handler=handle, on_assign=restore)
    assert await got.wait_for_count(1) == [True]
    assert attempts == 2


async def test_an_idle_consumer_keeps_polling_and_ends_unhealthy_only_when_stopped(
    bus: EmbeddedBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "_IDLE_WAIT_S", 0.01)

    async def ignore(record: BusRecord) -> None:
        return None

    sub = await bus.subscribe([TOPIC], group_id=GROUP, handler=ignore)
    first = sub.last_poll
    await asyncio.sleep(0.2)  # idle time passing is the point: nothing arrives to wake the loop
    assert sub.last_poll > first and sub.healthy
    await sub.stop()
    assert not sub.healthy
