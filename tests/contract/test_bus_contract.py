"""The same contract for both bus adapters: embedded and Kafka (on the real broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, KafkaTimeoutError

from baton import topics
from baton.bus.base import (
    MAX_MESSAGE_BYTES,
    Bus,
    BusRecord,
    BusUnavailableError,
    MessageTooLargeError,
    Subscription,
)
from baton.bus.kafka import KafkaBus
from baton.context import make_snapshot
from baton.contracts.models import DeadLettered, Envelope, Event, StepRequested
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus, EventConsumer
from tests.conftest import PARTITIONS
from tests.harness.collect import Collector
from tests.harness.identities import publish_signed, trust


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


def _step(n: int) -> StepRequested:
    return StepRequested(
        envelope=Envelope(workflow_id="wf-dlq", tenant_id="t1", producer="test"),
        agent="contract",
        attempt=n,
        snapshot=make_snapshot({"n": n}, version=1),
    )


async def test_undecodable_message_is_dead_lettered_once_and_the_partition_moves_on(
    bus: Bus, unique: str, serde: AvroSerde
) -> None:
    # An agent steps topic of an agent kind of its own: a Baton topic (consumers dead-letter events on
    # topics they do not know), yet unique to this test.
    topic, group = topics.agent_steps(f"contract-{unique}"), f"g.{unique}"
    await bus.create_topics([topic, topics.DEAD_LETTER], partitions=PARTITIONS)
    events = EventBus(bus=bus, serde=serde, producer="contract-test", trust=trust("supervisor"))
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
    await events.publish(topic, _step(1))
    await publish_signed(bus, "supervisor", topic, b"\x13 definitely not avro", key=b"wf-dlq")
    await events.publish(topic, _step(2))
    await handled.wait_for_count(2)
    assert [e.attempt for e in handled.items if isinstance(e, StepRequested)] == [1, 2]
    [parked] = await dead.wait_for_count(1)
    assert isinstance(parked, DeadLettered)
    assert parked.reason_code == "BAD_MAGIC_BYTE"
    assert "Confluent" in parked.reason
    assert parked.payload == b"\x13 definitely not avro"
    assert parked.source_topic == topic and parked.source_key == b"wf-dlq"
    # once: a later valid message does not produce a second dead letter
    await events.publish(topic, _step(3))
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


async def test_a_handler_failure_is_retried_until_it_succeeds_and_committed_only_then(bus: Bus, unique: str) -> None:
    topic, group = f"t.retry.{unique}", f"g.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    attempts: list[bytes] = []
    got: Collector[bytes] = Collector()

    async def down_twice(record: BusRecord) -> None:
        attempts.append(record.value)
        if record.value == b"x" and attempts.count(b"x") <= 2:
            raise ConnectionError("downstream is down")
        await got.add(record.value)

    sub = await bus.subscribe([topic], group_id=group, handler=down_twice)
    await bus.publish(topic, b"x", key=b"k")
    await bus.publish(topic, b"y", key=b"k")
    assert await got.wait_for_count(2) == [b"x", b"y"]
    assert attempts == [b"x", b"x", b"x", b"y"]
    await sub.stop()
    # Both were committed once handled: the group's next member starts after them.
    again: Collector[bytes] = Collector()

    async def keep(record: BusRecord) -> None:
        await again.add(record.value)

    await bus.subscribe([topic], group_id=group, handler=keep)
    await bus.publish(topic, b"z", key=b"k")
    assert await again.wait_for_count(1, within=60) == [b"z"]


async def test_a_message_of_one_and_a_half_megabytes_round_trips(bus: Bus, unique: str) -> None:
    topic = f"t.large.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    value = bytes(range(256)) * (1_500_000 // 256)
    got: Collector[BusRecord] = Collector()
    await bus.subscribe([topic], group_id=f"g.{unique}", handler=got.add)
    await bus.publish(topic, value, key=b"wf-large")
    [record] = await got.wait_for_count(1)
    assert record.value == value and record.key == b"wf-large"


async def test_a_message_over_the_limit_is_refused_as_too_large_not_as_an_outage(bus: Bus, unique: str) -> None:
    topic = f"t.huge.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    with pytest.raises(MessageTooLargeError) as refused:
        await bus.publish(topic, b"\0" * (MAX_MESSAGE_BYTES + 1), key=b"wf-huge")
    assert not isinstance(refused.value, BusUnavailableError)
    assert topic in str(refused.value) and f"{MAX_MESSAGE_BYTES:,}" in str(refused.value)
    assert "shrink the context" in str(refused.value)
    assert sum((await bus.end_offsets(topic)).values()) == 0


async def test_rebalance_hooks_hand_partitions_over_before_any_record_of_them_is_handled(bus: Bus, unique: str) -> None:
    topic, group = f"t.hooks.{unique}", f"g.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    everything = {(topic, p) for p in range(PARTITIONS)}
    owned: dict[str, set[tuple[str, int]]] = {"a": set(), "b": set()}
    hooks: Collector[tuple[str, str, frozenset[tuple[str, int]]]] = Collector()
    got: Collector[tuple[str, BusRecord]] = Collector()
    problems: list[str] = []

    async def member(name: str, other: str) -> Subscription:
        async def on_assign(partitions: frozenset[tuple[str, int]]) -> None:
            if partitions & owned[other]:
                problems.append(f"{name} was given {sorted(partitions & owned[other])} still owned by {other}")
            await asyncio.sleep(0.2)  # slow, as a state restore is: no record may overtake it
            owned[name] |= partitions
            await hooks.add((name, "assign", partitions))

        async def on_revoke(partitions: frozenset[tuple[str, int]]) -> None:
            owned[name] -= partitions
            await hooks.add((name, "revoke", partitions))

        async def handle(r: BusRecord) -> None:
            if (r.topic, r.partition) not in owned[name]:
                problems.append(f"{name} got {r.partition}@{r.offset} without owning partition {r.partition}")
            await got.add((name, r))

        return await bus.subscribe([topic], group_id=group, handler=handle, on_assign=on_assign, on_revoke=on_revoke)

    async def publish(batch: str) -> set[bytes]:
        values = {f"{batch}-{i}".encode() for i in range(20)}
        for i, value in enumerate(sorted(values)):
            await bus.publish(topic, value, key=f"k{i}".encode())
        return values

    first = await publish("first")  # waiting before anyone joins
    a = await member("a", "b")
    await got.wait_until(lambda items: {r.value for _, r in items} >= first)
    assert owned["a"] == everything
    b = await member("b", "a")
    await hooks.wait_until(
        lambda _: bool(owned["a"]) and bool(owned["b"]) and owned["a"] | owned["b"] == everything, within=60
    )
    assert not owned["a"] & owned["b"]
    second = await publish("second")
    await got.wait_until(lambda items: {r.value for _, r in items} >= second)
    moving = frozenset(owned["a"])
    before_stop = len(hooks.items)
    await a.stop()
    assert owned["a"] == set(), "stop() runs on_revoke before leaving the group"
    await hooks.wait_until(lambda _: owned["b"] == everything, within=60)
    after_stop = hooks.items[before_stop:]
    assert moving <= {tp for name, kind, tps in after_stop if name == "b" and kind == "assign" for tp in tps}
    third = await publish("third")
    await got.wait_until(lambda items: {r.value for _, r in items} >= third, within=60)
    assert {name for name, r in got.items if r.value in third} == {"b"}
    assert problems == []
    await b.stop()


async def test_a_reader_without_group_is_assigned_every_partition_once(bus: Bus, unique: str) -> None:
    topic = f"t.broadcast.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    assigned: Collector[frozenset[tuple[str, int]]] = Collector()
    got: Collector[BusRecord] = Collector()
    await bus.publish(topic, b"already there", key=b"k")
    await bus.subscribe([topic], group_id=None, handler=got.add, on_assign=assigned.add)
    await got.wait_for_count(1)
    await bus.publish(topic, b"later", key=b"k")
    await got.wait_for_count(2)
    assert assigned.items == [frozenset((topic, p) for p in range(PARTITIONS))]


async def test_a_reader_from_the_end_reads_only_what_is_published_after_it_subscribed(bus: Bus, unique: str) -> None:
    topic = f"t.from-end.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    for i in range(8):
        await bus.publish(topic, f"old-{i}".encode(), key=f"k{i}".encode())
    got: Collector[BusRecord] = Collector()
    await bus.subscribe([topic], group_id=None, handler=got.add, from_end=True)
    # Published right after subscribe returned, on every partition: none may be missed, no old one read.
    new = {f"new-{i}".encode() for i in range(8)}
    for i, value in enumerate(sorted(new)):
        await bus.publish(topic, value, key=f"k{i}".encode())
    await got.wait_until(lambda items: {r.value for r in items} >= new)
    assert sorted(r.value for r in got.items) == sorted(new)


async def test_a_failing_on_assign_is_retried_before_any_record_is_handled(bus: Bus, unique: str) -> None:
    topic = f"t.assign-fails.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    values = {f"r{i}".encode() for i in range(12)}
    for i, value in enumerate(sorted(values)):
        await bus.publish(topic, value, key=f"k{i}".encode())
    attempts = 0
    restored = False
    got: Collector[tuple[bool, bytes]] = Collector()

    async def restore(partitions: frozenset[tuple[str, int]]) -> None:
        nonlocal attempts, restored
        attempts += 1
        if attempts == 1:
            raise ConnectionError("state store is down")
        restored = True

    async def handle(record: BusRecord) -> None:
        await got.add((restored, record.value))

    # A reader without group: its first poll may fetch records before on_assign ran; none may be lost.
    await bus.subscribe([topic], group_id=None, handler=handle, on_assign=restore)
    await got.wait_until(lambda items: {value for _, value in items} >= values)
    assert attempts == 2
    assert all(was_restored for was_restored, _ in got.items)
    assert sorted(value for _, value in got.items) == sorted(values)


async def test_replay_of_selected_partitions_reads_only_those(bus: Bus, unique: str) -> None:
    topic = f"t.replay-some.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    for i in range(40):
        await bus.publish(topic, str(i).encode(), key=f"wf-{i}".encode())
    every: list[BusRecord] = []
    some: list[BusRecord] = []

    async def keep_every(record: BusRecord) -> None:
        every.append(record)

    async def keep_some(record: BusRecord) -> None:
        some.append(record)

    assert await bus.replay([topic], keep_every) == 40
    count = await bus.replay([topic], keep_some, partitions={1, 3})
    assert count == len(some) == sum(1 for r in every if r.partition in (1, 3))
    assert {r.partition for r in some} <= {1, 3}
    assert sorted(r.value for r in some) == sorted(r.value for r in every if r.partition in (1, 3))
    assert await bus.replay([topic], keep_some, partitions=()) == 0


async def test_end_offsets_are_where_the_next_record_of_each_partition_goes(bus: Bus, unique: str) -> None:
    topic = f"t.ends.{unique}"
    await bus.create_topics([topic], partitions=PARTITIONS)
    assert await bus.end_offsets(topic) == {p: 0 for p in range(PARTITIONS)}
    for i in range(25):
        await bus.publish(topic, str(i).encode(), key=f"wf-{i}".encode())
    ends = await bus.end_offsets(topic)
    assert sum(ends.values()) == 25 and set(ends) == set(range(PARTITIONS))
    got: Collector[BusRecord] = Collector()
    await bus.subscribe([topic], group_id=f"g.{unique}", handler=got.add)
    await bus.publish(topic, b"next", key=b"wf-next")
    records = await got.wait_for_count(26)
    [latest] = [r for r in records if r.value == b"next"]
    assert latest.offset == ends[latest.partition]
    for p in range(PARTITIONS):
        assert ends[p] == sum(1 for r in records if r.partition == p and r.value != b"next")
    assert await bus.end_offsets(f"t.absent.{unique}") == {}


# -- Kafka only: what the embedded bus has no counterpart for ------------------------------------------


@pytest.fixture
async def kafka_bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    b = KafkaBus(kafka_bootstrap, client_id="test", partitions=PARTITIONS)
    await b.start()
    yield b
    await b.stop()


async def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's configuration, once the broker knows the topic (creation reaches it shortly after)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = asyncio.get_running_loop().time() + 30
    try:
        while True:
            [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            [(error, message, _type, _name, entries)] = response.resources
            if error == 0:
                return {entry[0]: entry[1] for entry in entries}
            assert asyncio.get_running_loop().time() < deadline, f"{topic} not described: {error} {message}"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _eventually(condition: Callable[[], bool], within: float = 30.0) -> None:
    """Wait for a condition nothing signals (a property of a running loop)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_topics_are_created_with_the_size_limit_and_compaction_when_asked(
    kafka_bus: KafkaBus, kafka_bootstrap: str, unique: str
) -> None:
    plain, compacted = f"t.plain.{unique}", f"t.compacted.{unique}"
    await kafka_bus.create_topics([plain])
    await kafka_bus.create_topics([compacted], compacted=True)
    plain_config = await _topic_config(kafka_bootstrap, plain)
    compacted_config = await _topic_config(kafka_bootstrap, compacted)
    assert plain_config["cleanup.policy"] == "delete"
    assert compacted_config["cleanup.policy"] == "compact"
    assert plain_config["max.message.bytes"] == compacted_config["max.message.bytes"] == str(MAX_MESSAGE_BYTES)


@pytest.mark.integration
async def test_a_publish_kafka_does_not_acknowledge_is_a_transient_bus_error(
    kafka_bus: KafkaBus, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def times_out(*args: object, **kwargs: object) -> None:
        raise KafkaTimeoutError("injected: no acknowledgement in time")

    monkeypatch.setattr(kafka_bus._producer, "send_and_wait", times_out)
    with pytest.raises(BusUnavailableError) as failed:
        await kafka_bus.publish(f"t.down.{unique}", b"v", key=b"k")
    assert f"t.down.{unique}" in str(failed.value) and "KafkaTimeoutError" in str(failed.value)
    assert "retried" in str(failed.value)


@pytest.mark.integration
async def test_a_failed_poll_is_logged_and_the_consumer_resumes(
    kafka_bus: KafkaBus, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"t.poll-fails.{unique}"
    await kafka_bus.create_topics([topic])
    got: Collector[bytes] = Collector()

    async def keep(record: BusRecord) -> None:
        await got.add(record.value)

    sub = await kafka_bus.subscribe([topic], group_id=f"g.{unique}", handler=keep, max_records=5)
    consumer = sub._consumer
    real_getmany = consumer.getmany
    failed = asyncio.Event()
    polled: list[int] = []

    async def getmany(*args: Any, **kwargs: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise KafkaError("injected: fetch failed")
        batches = await real_getmany(*args, **kwargs)
        polled.append(sum(len(messages) for messages in batches.values()))
        return batches

    monkeypatch.setattr(consumer, "getmany", getmany)
    await failed.wait()
    assert not sub.healthy
    values = [f"r{i}".encode() for i in range(30)]
    for i, value in enumerate(values):
        await kafka_bus.publish(topic, value, key=f"k{i % 3}".encode())
    await got.wait_until(lambda items: set(items) >= set(values))
    await _eventually(lambda: sub.healthy)
    assert max(polled) <= 5, "a poll hands over at most max_records"


@pytest.mark.integration
async def test_a_failed_commit_redelivers_what_it_did_not_commit(
    kafka_bus: KafkaBus, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, group = f"t.commit-fails.{unique}", f"g.{unique}"
    await kafka_bus.create_topics([topic])
    got: Collector[bytes] = Collector()

    async def keep(record: BusRecord) -> None:
        await got.add(record.value)

    sub = await kafka_bus.subscribe([topic], group_id=group, handler=keep)
    real_commit = sub._consumer.commit
    refused: list[dict[Any, int]] = []
    refusal = asyncio.Event()

    async def commit(offsets: dict[Any, int]) -> None:
        if not refused:
            refused.append(offsets)
            refusal.set()
            raise KafkaError("injected: commit not acknowledged")
        await real_commit(offsets)

    monkeypatch.setattr(sub._consumer, "commit", commit)
    values = [f"r{i}".encode() for i in range(10)]
    for value in values:
        await kafka_bus.publish(topic, value, key=b"one-key")
    # What the refused commit covered is read again from the last commit (the start), then the rest follows.
    await refusal.wait()
    [offsets] = refused
    [uncommitted] = offsets.values()
    await got.wait_for_count(uncommitted + len(values))
    assert got.items == values[:uncommitted] + values
    await _eventually(lambda: sub.healthy)
    await sub.stop()
    # Then committed for good: the group's next member starts after them.
    again: Collector[bytes] = Collector()

    async def keep_again(record: BusRecord) -> None:
        await again.add(record.value)

    await kafka_bus.subscribe([topic], group_id=group, handler=keep_again)
    await kafka_bus.publish(topic, b"new", key=b"one-key")
    assert await again.wait_for_count(1, within=60) == [b"new"]
