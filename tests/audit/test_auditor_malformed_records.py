"""No record, however malformed, stops the auditor: what it cannot decode or describe is appended as
undecodable with its reason and the partition moves on; only an outage (registry, store) retries the batch."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from baton import topics
from baton.audit.anchors import StoreAnchorSink
from baton.audit.chain import Record
from baton.audit.keys import encode_signing_key, generate_signing_key
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.store import AuditStore
from baton.audit.verify import verify_store
from baton.bus.base import Bus, BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.bus.kafka import KafkaBus
from baton.contracts.catalogue import Schema
from baton.contracts.models import AgentDecision, DeadLettered, Envelope, TaskRequested
from baton.contracts.registry import LocalSchemaRegistry, SchemaRegistryError
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus
from services.auditor.app import start
from services.auditor.config import Settings
from services.auditor.handlers import AuditorHandlers
from tests.harness.identities import trust

KEY = generate_signing_key()
PUBLIC = KEY.public_key()
NOT_UTF8 = b"\xff\xfe\x80wf\xc3("


def _auditor(store: AuditStore, serde: AvroSerde) -> AuditorHandlers:
    # an anchor after every batch: each test's store verifies as it stands
    return AuditorHandlers(
        store, serde, signing_key=KEY, anchor_every=1, auditor_id="test-auditor", sinks=[StoreAnchorSink(store)]
    )


def _task(workflow_id: str, workflow_type: str = "customer_onboarding", **labels: str) -> TaskRequested:
    return TaskRequested(
        envelope=Envelope(workflow_id=workflow_id, tenant_id="t1", producer="test"),
        workflow_type=workflow_type,
        input_json="{}",
        requested_by="crm",
        labels=labels,
    )


async def _dead_lettered_task(serde: AvroSerde) -> DeadLettered:
    """What the supervisor parks for a task of an undeclared workflow type: raw Avro bytes, not UTF-8."""
    task = await serde.encode(_task("wf-dlq", "no_such_workflow"))
    return DeadLettered(
        envelope=Envelope(workflow_id="wf-dlq", tenant_id="t1", producer="supervisor"),
        source_topic=topics.TASKS,
        source_partition=2,
        source_offset=41,
        source_key=NOT_UTF8,
        consumer_group=topics.GROUP_SUPERVISOR,
        reason_code="UNKNOWN_WORKFLOW_TYPE",
        reason="workflow type no_such_workflow is not declared",
        payload=task,
    )


class Log:
    """Records of one topic-partition, with consecutive offsets."""

    def __init__(self, topic: str, partition: int = 0) -> None:
        self.topic, self.partition, self.records = topic, partition, list[BusRecord]()

    def put(self, value: bytes, key: bytes | None = b"wf-1") -> None:
        self.records.append(BusRecord(self.topic, self.partition, len(self.records), key, value))


async def _docs(store: AuditStore) -> list[Record]:
    return [d async for d in store.stream()]


async def _assert_verified(store: AuditStore, records: Sequence[BusRecord]) -> list[Record]:
    """Every record appended exactly once, at its position, and the whole store verifies."""
    docs = await _docs(store)
    assert sorted(d["_id"] for d in docs) == sorted(f"{r.topic}/{r.partition}/{r.offset}" for r in records)
    report = await verify_store(store, PUBLIC)
    assert report.ok, report.problems
    return docs


async def test_a_dead_lettered_event_with_non_utf8_bytes_is_appended_and_its_bytes_recoverable(
    store: AuditStore, serde: AvroSerde
) -> None:
    poison = await _dead_lettered_task(serde)
    dlq = Log(topics.DEAD_LETTER)
    dlq.put(await serde.encode(poison), key=NOT_UTF8)
    dlq.put(await serde.encode(_task("wf-after")), key=b"wf-after")
    auditor = _auditor(store, serde)
    await auditor.on_batch(dlq.records)
    [doc, after] = await _assert_verified(store, dlq.records)
    assert auditor.appended == 2
    assert doc["event_type"] == "DeadLettered" and doc["workflow_id"] == "wf-dlq"
    assert base64.b64decode(doc["payload"]["payload"], validate=True) == poison.payload
    assert base64.b64decode(doc["payload"]["source_key"], validate=True) == NOT_UTF8
    assert doc["payload"]["reason_code"] == "UNKNOWN_WORKFLOW_TYPE"
    assert after["event_type"] == "TaskRequested" and after["workflow_id"] == "wf-after"


class OddRegistry(LocalSchemaRegistry):
    """The local registry, plus schemas under two ids that no Baton release registers."""

    ODD: dict[int, Schema] = {
        0x7FFF0001: {"type": "record", "name": "Weird", "fields": [{"name": "a", "type": "no.such.Type"}]},
        0x7FFF0002: {"type": "string"},
    }

    async def schema_by_id(self, schema_id: int) -> Schema:
        return self.ODD.get(schema_id) or await super().schema_by_id(schema_id)


async def _malformed(serde: AvroSerde, registry: OddRegistry) -> list[tuple[bytes, bytes | None, str]]:
    """(value, key, the reason it is undecodable) for every kind of bad record the auditor can meet."""
    valid = await serde.encode(_task("wf-1"))
    header = valid[:5]
    nan = AgentDecision(
        envelope=Envelope(workflow_id="wf-1", tenant_id="t1", producer="test"),
        agent="x",
        decision_type="select_tool",
        input_context_sha256="0" * 64,
        confidence=math.nan,
    )
    garbage = b"\x01 not avro"
    return [
        (b"", b"wf-1", "TOO_SHORT"),
        (b"\x00\x01\x02", b"wf-1", "TOO_SHORT"),
        (b"\x07" + valid[1:], b"wf-1", "BAD_MAGIC_BYTE"),
        (b"\x00\x7f\xff\xff\xfe" + valid[5:], b"wf-1", "UNKNOWN_SCHEMA_ID"),
        (header + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"wf-1", "AVRO_DECODE"),
        (valid[: len(valid) // 2], b"wf-1", "AVRO_DECODE"),
        (valid + b"\x00\x00", b"wf-1", "TRAILING_BYTES"),
        (struct.pack(">bI", 0, 0x7FFF0001) + b"\x02", b"wf-1", "UNSUPPORTED_SCHEMA"),  # unparseable schema
        (struct.pack(">bI", 0, 0x7FFF0002) + b"\x02", b"wf-1", "UNSUPPORTED_SCHEMA"),  # not a record schema
        (await serde.encode(nan), b"wf-1", "UNDESCRIBABLE"),
        # An integer beyond ±(2^53-1) has no RFC 8785 encoding (NFC-colliding keys do since it replaced NFC).
        (
            await serde.encode(nan.model_copy(update={"confidence": 0.5, "prompt_tokens": 2**60})),
            b"wf-1",
            "UNDESCRIBABLE",
        ),
        (garbage, NOT_UTF8, "BAD_MAGIC_BYTE"),
        (garbage, None, "BAD_MAGIC_BYTE"),
        (garbage, b"", "BAD_MAGIC_BYTE"),
        (garbage, b"\x00\x1b[31m", "BAD_MAGIC_BYTE"),
        (garbage, b"k" * 5000, "BAD_MAGIC_BYTE"),
    ]


async def test_a_batch_of_every_kind_of_malformed_record_is_appended_whole_and_the_partition_moves_on(
    store: AuditStore,
) -> None:
    registry = OddRegistry()
    serde = AvroSerde(registry)
    tasks = Log(topics.TASKS)
    tasks.put(await serde.encode(_task("wf-1")))
    bad = await _malformed(serde, registry)
    for value, key, _reason in bad:
        tasks.put(value, key)
    dlq = Log(topics.DEAD_LETTER, partition=1)
    dlq.put(await serde.encode(await _dead_lettered_task(serde)), key=NOT_UTF8)
    tasks.put(await serde.encode(_task("wf-2")), b"wf-2")
    first = [*tasks.records, *dlq.records]
    tasks.put(await serde.encode(_task("wf-3")), b"wf-3")
    dlq.put(await serde.encode(_task("wf-3")), b"wf-3")
    second = [tasks.records[-1], dlq.records[-1]]

    auditor = _auditor(store, AvroSerde(registry))
    await auditor.on_batch(first)
    await auditor.on_batch(second)
    await auditor.anchor()

    docs = await _assert_verified(store, first + second)
    assert auditor.appended == len(first) + len(second)
    by_id = {d["_id"]: d for d in docs}
    for record, (value, key, reason) in zip(tasks.records[1 : 1 + len(bad)], bad, strict=True):
        doc = by_id[f"{record.topic}/{record.partition}/{record.offset}"]
        assert doc["event_type"] == "Undecodable", (reason, doc["payload"])
        assert doc["payload"]["error"].startswith(reason + ": "), doc["payload"]["error"]
        assert base64.b64decode(doc["payload"]["raw_b64"], validate=True) == value
        raw_key = doc["payload"]["key_b64"]
        assert (None if raw_key is None else base64.b64decode(raw_key, validate=True)) == key
        assert doc["workflow_id"].startswith("undecodable"), "an unauthenticated key joined a real workflow's chain"
        assert doc["workflow_id"].isprintable() and len(doc["workflow_id"]) <= 300
    assert {by_id[f"{topics.TASKS}/0/{o}"]["workflow_id"] for o in (1, 2)} == {"undecodable:wf-1"}
    decoded = [d for d in docs if d["event_type"] != "Undecodable"]
    assert sorted(d["workflow_id"] for d in decoded) == ["wf-1", "wf-2", "wf-3", "wf-3", "wf-dlq"]
    [wf1] = [d async for d in store.stream_by_workflow("wf-1")]
    assert wf1["event_type"] == "TaskRequested"


class FlakyStore:
    """Wraps a store whose append fails once: before writing anything, or after writing part of the batch."""

    def __init__(self, inner: AuditStore, *, part: int) -> None:
        self.inner, self.part, self.failed = inner, part, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, batch: Sequence[Record]) -> None:
        if not self.failed:
            self.failed = True
            await self.inner.append(batch[: self.part])
            raise ConnectionError("audit store unreachable")
        await self.inner.append(batch)


@pytest.mark.parametrize("part", [0, 5], ids=["nothing-written", "part-written"])
async def test_a_store_outage_retries_the_batch_and_then_everything_is_appended_once(
    store: AuditStore, part: int
) -> None:
    registry = OddRegistry()
    serde = AvroSerde(registry)
    tasks = Log(topics.TASKS)
    dlq = Log(topics.DEAD_LETTER)
    tasks.put(await serde.encode(_task("wf-1")))
    poison = await serde.encode(await _dead_lettered_task(serde))
    for value, key, _ in await _malformed(serde, registry):
        tasks.put(value, key)
        dlq.put(poison, key=NOT_UTF8)  # parked again and again: one event, the rest its duplicates
    tasks.put(await serde.encode(_task("wf-2")), b"wf-2")
    batch = [*tasks.records, *dlq.records]

    flaky = FlakyStore(store, part=part)
    auditor = AuditorHandlers(
        flaky, AvroSerde(registry), signing_key=KEY, anchor_every=1, auditor_id="a", sinks=[StoreAnchorSink(store)]
    )
    with pytest.raises(ConnectionError):
        await auditor.on_batch(batch)
    await auditor.on_batch(batch)  # the bus did not commit: the same batch again
    assert auditor.appended == len(batch) - part and auditor.skipped == part
    docs = await _assert_verified(store, batch)
    dead = [d for d in docs if d["event_type"] == "DeadLettered"]
    assert len(dead) == len(dlq.records) and sum(1 for d in dead if d["duplicate_of"]) == len(dlq.records) - 1


class FlakyRegistry(LocalSchemaRegistry):
    """A registry that is down until told otherwise."""

    down = True

    async def schema_by_id(self, schema_id: int) -> Schema:
        if self.down:
            raise SchemaRegistryError("schema registry at http://registry:8081 unreachable")
        return await super().schema_by_id(schema_id)


async def test_a_registry_outage_retries_the_batch_instead_of_recording_it_undecodable(store: AuditStore) -> None:
    tasks = Log(topics.TASKS)
    writer = AvroSerde(LocalSchemaRegistry())
    tasks.put(b"\x01 not avro")
    tasks.put(await writer.encode(_task("wf-1")))
    registry = FlakyRegistry()
    auditor = _auditor(store, AvroSerde(registry))
    with pytest.raises(Exception, match="unreachable"):
        await auditor.on_batch(tasks.records)
    assert await store.count() == 0
    registry.down = False
    await auditor.on_batch(tasks.records)
    docs = await _assert_verified(store, tasks.records)
    assert [d["event_type"] for d in docs] == ["Undecodable", "TaskRequested"]


@pytest.mark.parametrize("restarted", [False, True], ids=["remembered", "asked-the-store"])
async def test_an_event_that_takes_a_redeliverys_id_does_not_stall_the_auditor(
    store: AuditStore, serde: AvroSerde, restarted: bool
) -> None:
    original = _task("wf-1")
    taken = f"{original.envelope.event_id}#dup@{topics.TASKS}/0/2"  # what the copy at offset 2 would be called
    squatter = _task("wf-1")
    squatter = squatter.model_copy(update={"envelope": squatter.envelope.model_copy(update={"event_id": taken})})
    tasks = Log(topics.TASKS)
    for event in (squatter, original, original):
        tasks.put(await serde.encode(event))
    auditor = _auditor(store, serde)
    await auditor.on_batch(tasks.records[:1])
    if restarted:
        auditor = _auditor(store, serde)
    await auditor.on_batch(tasks.records[1:])
    docs = await _assert_verified(store, tasks.records)
    assert [d["duplicate_of"] for d in docs] == [None, None, original.envelope.event_id]
    assert len({d["event_id"] for d in docs}) == 3


async def test_payload_keys_mongodb_refuses_as_field_names_are_stored_and_verify(
    store: AuditStore, serde: AvroSerde
) -> None:
    labels = {"app.kubernetes.io/name": "crm", "$where": "1", "nul\x00key": "x", "": "empty", "plain": "nul\x00value"}
    tasks = Log(topics.TASKS)
    tasks.put(await serde.encode(_task("wf-1", **labels)))
    tasks.put(await serde.encode(_task("wf-2", team="payments")))
    await _auditor(store, serde).on_batch(tasks.records)
    labelled, plain = await _assert_verified(store, tasks.records)
    assert labelled["event_type"] == "TaskRequested" and labelled["payload"]["labels"] == labels
    assert plain["payload"]["labels"] == {"team": "payments"}
    [traced] = [d async for d in store.stream_by_workflow("wf-1")]
    assert traced["payload"]["labels"] == labels


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.integration)])
async def auditor_settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Bus, Settings]]:
    """The auditor's bus and settings: embedded bus and SQLite, or the real broker and MongoDB (FerretDB)."""
    bus: Bus
    if request.param == "kafka":
        bus = KafkaBus(request.getfixturevalue("kafka_bootstrap"), client_id="audit-poison", partitions=2)
        settings = Settings(
            store="mongodb",
            mongodb_url=request.getfixturevalue("mongodb_url"),
            mongodb_database=f"audit_poison_{uuid.uuid4().hex[:8]}",
            signing_key=SecretStr(encode_signing_key(KEY)),
            batch_size=50,
        )
    else:
        bus = EmbeddedBus(partitions=2)
        settings = Settings(
            store="embedded",
            sqlite_path=tmp_path / "audit.db",
            signing_key=SecretStr(encode_signing_key(KEY)),
            batch_size=50,
        )
    await bus.start()
    yield bus, settings
    await bus.stop()


async def _until_audited(store: AuditStore, digests: set[str], timeout_s: float) -> None:
    async def audited() -> None:
        while not digests <= {d["raw_sha256"] async for d in store.stream()}:  # noqa: ASYNC110 - no completion signal
            await asyncio.sleep(0.1)

    await asyncio.wait_for(audited(), timeout_s)


async def test_the_auditor_service_audits_poison_and_garbage_and_keeps_going(
    auditor_settings: tuple[Bus, Settings], serde: AvroSerde
) -> None:
    bus, settings = auditor_settings
    app = await start(
        EventBus(bus=bus, serde=AvroSerde(LocalSchemaRegistry()), producer="auditor-test", trust=trust("auditor")),
        settings,
    )
    run = uuid.uuid4().hex
    dead_lettered = await _dead_lettered_task(serde)
    poison = await serde.encode(dead_lettered)
    bad: list[tuple[str, bytes, bytes | None]] = [
        (topics.DEAD_LETTER, poison, NOT_UTF8),
        (topics.TASKS, f"\x01garbage {run}".encode(), NOT_UTF8),
        (topics.TASKS, b"\x00\x7f\xff\xff\xfe" + run.encode(), None),
        (topics.DEAD_LETTER, b"\x07" + run.encode(), b"\x00\xff"),
    ]
    good: list[tuple[str, bytes, bytes | None]] = []
    for topic, _, key in bad:  # same keys: the same partitions, after the bad records
        workflow = f"wf-{run[:8]}-{len(good)}"
        good.append((topic, await serde.encode(_task(workflow)), key))
    try:
        for topic, value, key in [*bad, *good]:
            await bus.publish(topic, value, key=key)
        await _until_audited(app.store, {hashlib.sha256(v).hexdigest() for _, v, _ in [*bad, *good]}, 60)
    finally:
        await app.stop()
    store = settings.build_store()
    try:
        docs = {d["raw_sha256"]: d async for d in store.stream()}
        kinds = [docs[hashlib.sha256(v).hexdigest()]["event_type"] for _, v, _ in [*bad, *good]]
        assert kinds == ["DeadLettered", *["Undecodable"] * 3, *["TaskRequested"] * 4]
        dead = docs[hashlib.sha256(poison).hexdigest()]
        assert base64.b64decode(dead["payload"]["payload"]) == dead_lettered.payload
        report = await verify_store(store, PUBLIC)
        assert report.ok, report.problems
        assert report.anchors >= 1
    finally:
        await store.close()


async def test_the_audit_records_who_signed_each_message_and_marks_forgeries(tmp_path: Path, serde: AvroSerde) -> None:
    from tests.harness.identities import DOMAIN, signed_record

    store = SqliteAuditStore(tmp_path / "signers.db")
    await store.setup()
    auditor = AuditorHandlers(
        store, serde, signing_key=KEY, anchor_every=1, auditor_id="test-auditor", keyring=DOMAIN.keyring
    )
    value = await serde.encode(_task("wf-signers"))
    genuine = signed_record("client", topics.TASKS, value, key=b"wf-signers", offset=0)
    unsigned = BusRecord(topics.TASKS, 0, 1, b"wf-signers", value)
    moved = signed_record("client", topics.OUTCOMES, value, key=b"wf-signers", offset=2)
    moved = BusRecord(topics.TASKS, 0, 2, moved.key, moved.value, headers=moved.headers)  # signed for another topic
    await auditor.on_batch([genuine, unsigned, moved])
    signers = [doc.get("signer") async for doc in store.stream()]
    await store.close()
    assert signers == ["client", "UNAUTHENTICATED:UNSIGNED", "UNAUTHENTICATED:BAD_SIGNATURE"]
