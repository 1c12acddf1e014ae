"""The same contract for both bus adapters: embedded and Kafka (on the real broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from baton import topics
from baton.bus.base import Bus, BusRecord
from baton.contracts.models import ControlAction, ControlCommand, ControlScope, DeadLettered, Envelope, Event
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus, EventConsumer
from tests.conftest import PARTITIONS
from tests.harness.collect import Collector


async def test_messages_with_one_key_arrive_in_order(bus: Bus, unique: str) -> None:
    topic = f"t.order.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    got: Collector[BusRecord] = Collector()
    await bus.subscribe([topic], group_id=f"g.{unique}", handler=got.add)
    for i in range(60):
        await bus.publish(topic, str(i).encode(), key=f"wf-{i % 5}".encode())
    await got.wait_for_count(60)
    for k in range(5):
        seq = [int(r.value) for r in got.items if r.key == f"wf-{k}".encode()]
        assert seq == sorted(seq) and len(seq) == 12
        assert len({r.partition for r in got.items if r.key == f"wf-{k}".encode()}) == 1


async def test_group_members_split_partitions_and_a_rebalance_loses_nothing(bus: Bus, unique: str) -> None:
    topic, group = f"t.split.{unique}", f"g.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    got: Collector[tuple[str, BusRecord]] = Collector()

    async def member(name: str) -> object:
        async def handle(r: BusRecord) -> None:
            await got.add((name, r))

        return await bus.subscribe([topic], group_id=group, handler=handle)

    a = await member("a")
    for i in range(40):
        await bus.publish(topic, f"first-{i}".encode(), key=f"k{i}".encode())
    await got.wait_for_count(40)
    b = await member("b")

    # Once the group settled, both members own partitions, never the same one, and together all of them.
    def settled() -> bool:
        both = a.assigned and b.assigned  # type: ignore[attr-defined]
        return bool(both) and not (a.assigned & b.assigned) and len(a.assigned | b.assigned) == PARTITIONS  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 45
    while not settled() and loop.time() < deadline:
        await bus.publish(topic, b"tick", key=b"tick")
        await got.wait_until(lambda items: items[-1][1].value == b"tick")
    assert settled(), (a.assigned, b.assigned)  # type: ignore[attr-defined]
    for i in range(40):
        await bus.publish(topic, f"second-{i}".encode(), key=f"k{i}".encode())
    await got.wait_until(lambda items: {r.value for _, r in items} >= {f"second-{i}".encode() for i in range(40)})
    await a.stop()  # type: ignore[attr-defined]
    for i in range(40):
        await bus.publish(topic, f"third-{i}".encode(), key=f"k{i}".encode())
    expected = {f"{p}-{i}".encode() for p in ("first", "second", "third") for i in range(40)}
    await got.wait_until(lambda items: {r.value for _, r in items} >= expected, within=60)
    assert {name for name, r in got.items if r.value.startswith(b"third")} == {"b"}
    assert {name for name, r in got.items if r.value.startswith(b"second")} == {"a", "b"}


async def test_a_consumer_killed_before_commit_gets_the_message_again(bus: Bus, unique: str) -> None:
    topic, group = f"t.kill.{unique}", f"g.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    started = asyncio.Event()
    never = asyncio.Event()

    async def crash_mid_handling(r: BusRecord) -> None:
        started.set()
        await never.wait()  # the process "dies" here, before the commit

    victim = await bus.subscribe([topic], group_id=group, handler=crash_mid_handling)
    await bus.publish(topic, b"important", key=b"wf-1")
    await asyncio.wait_for(started.wait(), 30)
    await victim.kill()
    got: Collector[BusRecord] = Collector()
    await bus.subscribe([topic], group_id=group, handler=got.add)
    [record] = await got.wait_for_count(1, within=60)
    assert record.value == b"important"


def _command(n: int) -> ControlCommand:
    return ControlCommand(
        envelope=Envelope(workflow_id="wf-dlq", tenant_id="t1", producer="test"),
        command=ControlAction.HALT,
        scope=ControlScope.WORKFLOW,
        target="wf-dlq",
        reason=f"r{n}",
        issued_by="op",
    )


async def test_undecodable_message_is_dead_lettered_once_and_the_partition_moves_on(
    bus: Bus, unique: str, serde: AvroSerde
) -> None:
    topic, group = f"t.dlq.{unique}", f"g.{unique}"
    await bus.create_topics([topic, topics.DEAD_LETTER], partitions=PARTITIONS)
    events = EventBus(bus=bus, serde=serde, producer="contract-test")
    handled: Collector[Event] = Collector()

    async def on_event(event: Event, record: BusRecord) -> None:
        await handled.add(event)

    dead: Collector[Event] = Collector()

    async def on_dead(event: Event, record: BusRecord) -> None:
        if isinstance(event, DeadLettered) and event.consumer_group == group:
            await dead.add(event)

    consumer = EventConsumer(events, group_id=group, handler=on_event)
    await bus.subscribe([topic], group_id=group, handler=consumer)
    await bus.subscribe(
        [topics.DEAD_LETTER],
        group_id=f"dlq-reader.{unique}",
        handler=EventConsumer(events, group_id=f"dlq-reader.{unique}", handler=on_dead),
    )
    await events.publish(topic, _command(1))
    await bus.publish(topic, b"\x13 definitely not avro", key=b"wf-dlq")
    await events.publish(topic, _command(2))
    await handled.wait_for_count(2)
    assert [e.reason for e in handled.items if isinstance(e, ControlCommand)] == ["r1", "r2"]
    [parked] = await dead.wait_for_count(1)
    assert isinstance(parked, DeadLettered)
    assert parked.reason_code == "BAD_MAGIC_BYTE"
    assert "Confluent" in parked.reason
    assert parked.payload == b"\x13 definitely not avro"
    assert parked.source_topic == topic and parked.source_key == b"wf-dlq"
    # once: a later valid message does not produce a second dead letter
    await events.publish(topic, _command(3))
    await handled.wait_for_count(3)
    assert len(dead.items) == 1


async def test_replay_reads_everything_already_published_in_partition_order(bus: Bus, unique: str) -> None:
    topic = f"t.replay.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    for i in range(30):
        await bus.publish(topic, str(i).encode(), key=f"wf-{i % 3}".encode())
    got: list[BusRecord] = []

    async def keep(record: BusRecord) -> None:
        got.append(record)

    assert await bus.replay([topic], keep) == 30
    assert sorted(int(r.value) for r in got) == list(range(30))
    for k in range(3):
        seq = [int(r.value) for r in got if r.key == f"wf-{k}".encode()]
        assert seq == sorted(seq)
    assert await bus.replay([f"t.absent.{unique}"], keep) == 0


async def test_a_handler_outage_is_retried_from_the_same_offset_not_skipped(bus: Bus, unique: str) -> None:
    topic = f"t.outage.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    got: Collector[bytes] = Collector()
    failures = 0

    async def flaky(record: BusRecord) -> None:
        nonlocal failures
        if record.value == b"first" and failures == 0:
            failures += 1
            raise ConnectionError("downstream is down")
        await got.add(record.value)

    await bus.subscribe([topic], group_id=f"g.{unique}", handler=flaky)
    await bus.publish(topic, b"first", key=b"k")
    await bus.publish(topic, b"second", key=b"k")
    assert await got.wait_for_count(2) == [b"first", b"second"]
    assert failures == 1


async def test_batches_commit_only_after_the_handler_and_redeliver_whole_on_failure(bus: Bus, unique: str) -> None:
    topic, group = f"t.batch.{unique}", f"g.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    for i in range(50):
        await bus.publish(topic, str(i).encode(), key=f"k{i % 5}".encode())
    got: Collector[bytes] = Collector()
    failed = False

    async def handle(records: Sequence[BusRecord]) -> None:
        nonlocal failed
        assert len(records) <= 20
        if not failed:
            failed = True
            raise ConnectionError("store unavailable")
        for r in records:
            await got.add(r.value)

    sub = await bus.subscribe_batches([topic], group_id=group, handler=handle, max_records=20)
    await got.wait_until(lambda items: set(items) >= {str(i).encode() for i in range(50)})
    assert failed
    await sub.stop()
    # everything was committed: a new member of the group gets nothing old
    again: Collector[bytes] = Collector()

    async def handle_again(records: Sequence[BusRecord]) -> None:
        for r in records:
            await again.add(r.value)

    await bus.subscribe_batches([topic], group_id=group, handler=handle_again)
    await bus.publish(topic, b"new", key=b"k0")
    assert await again.wait_for_count(1) == [b"new"]
