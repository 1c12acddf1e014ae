"""KeyLanes: one key's records in order, keys concurrently, commit only the handled prefix, no double handling."""

from __future__ import annotations

import asyncio
import logging

from baton.bus.base import BusRecord, KeyLanes

log = logging.getLogger(__name__)


def _records(*keys: str, topic: str = "t", partition: int = 0) -> list[BusRecord]:
    return [BusRecord(topic, partition, offset, key.encode(), key.encode()) for offset, key in enumerate(keys)]


async def test_one_keys_records_run_in_order_and_different_keys_overlap() -> None:
    running: set[bytes] = set()
    overlapped = False
    order: list[tuple[bytes | None, int]] = []

    async def handle(record: BusRecord) -> None:
        nonlocal overlapped
        assert record.key not in running, "two records of one key ran at once"
        running.add(record.key or b"")
        overlapped = overlapped or len(running) > 1
        await asyncio.sleep(0.01)
        order.append((record.key, record.offset))
        running.discard(record.key or b"")

    handled = await KeyLanes(handle, log).handle(_records("a", "b", "a", "c", "b", "a"), stopping=lambda: False)
    assert overlapped
    assert [o for k, o in order if k == b"a"] == [0, 2, 5]
    assert [o for k, o in order if k == b"b"] == [1, 4]
    assert handled.commit == {("t", 0): 6} and handled.reread == {} and not handled.failed


async def test_a_failure_stops_its_key_commits_the_prefix_and_is_not_handled_twice_on_reread() -> None:
    calls: list[int] = []
    broken = {2}

    async def handle(record: BusRecord) -> None:
        calls.append(record.offset)
        if record.offset in broken:
            raise ConnectionError("the bus is down")

    lanes = KeyLanes(handle, log)
    records = _records("a", "b", "c", "d", "c")
    first = await lanes.handle(records, stopping=lambda: False)
    assert first.failed
    assert first.commit == {("t", 0): 2}  # offsets 0 and 1 are safe; 2 failed
    assert first.reread == {("t", 0): 2}
    assert 4 not in calls  # c's later record waits for c's failed one
    assert sorted(calls) == [0, 1, 2, 3]
    broken.clear()
    calls.clear()
    second = await lanes.handle(records[2:], stopping=lambda: False)
    # 3 (key d) was handled and acknowledged already: read again, it is not handled again.
    assert sorted(calls) == [2, 4]
    assert second.commit == {("t", 0): 5} and not second.failed


async def test_stopping_between_records_hands_over_the_rest() -> None:
    stop = False

    async def handle(record: BusRecord) -> None:
        nonlocal stop
        stop = True

    handled = await KeyLanes(handle, log, by_key=False).handle(_records("a", "b", "c"), stopping=lambda: stop)
    assert handled.commit == {("t", 0): 1} and handled.reread == {("t", 0): 1}


async def test_without_by_key_a_partition_runs_strictly_in_offset_order() -> None:
    order: list[int] = []

    async def handle(record: BusRecord) -> None:
        await asyncio.sleep(0.001 * (5 - record.offset))  # later offsets would finish first if concurrent
        order.append(record.offset)

    await KeyLanes(handle, log, by_key=False).handle(_records("a", "b", "c", "d", "e"), stopping=lambda: False)
    assert order == [0, 1, 2, 3, 4]


async def test_records_handled_ahead_stay_remembered_when_a_shorter_poll_completes() -> None:
    calls: list[int] = []
    broken = {0}

    async def handle(record: BusRecord) -> None:
        calls.append(record.offset)
        if record.offset in broken:
            raise ConnectionError("the bus is down")

    lanes = KeyLanes(handle, log)
    records = _records("a", "b", "c")
    await lanes.handle(records, stopping=lambda: False)  # 0 fails; 1 and 2 are handled
    broken.clear()
    calls.clear()
    # The next poll returns only offset 0 (a smaller fetch): it completes, and 1 and 2 are still known.
    first = await lanes.handle(records[:1], stopping=lambda: False)
    assert first.commit == {("t", 0): 1}
    second = await lanes.handle(records[1:], stopping=lambda: False)
    assert calls == [0]
    assert second.commit == {("t", 0): 3}
