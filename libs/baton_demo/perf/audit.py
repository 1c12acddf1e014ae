"""Small measurement entry points for `make bench`: the auditor and `verify` against their bare baselines.

Each returns a Rate (items, seconds); only the measured loop is timed (encoding the synthetic events
and building the baseline documents are not). The store is the caller's, set up and empty for the
append measurement; the bare baselines write to a scratch collection/table of the same database and
drop it afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from baton import topics
from baton.audit.anchors import StoreAnchorSink
from baton.audit.chain import AuditChain, Record, describe, record_id
from baton.audit.keys import generate_signing_key
from baton.audit.store import AuditStore
from baton.audit.verify import VerifyReport, verify_store
from baton.bus.base import BusRecord
from baton.context import make_snapshot
from baton.contracts.models import Envelope, Event, HandoffProposed, StepRequested, TaskRequested
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde


@dataclass(frozen=True)
class Rate:
    """How many items a measured loop handled, in how many seconds (wall clock), and how many CPU seconds this
    process spent meanwhile (its threads included; not a server's: FerretDB's CPU is its own process's)."""

    items: int
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")

    @property
    def per_cpu_second(self) -> float:
        return self.items / self.cpu_seconds if self.cpu_seconds > 0 else float("inf")


class _Clock:
    """Wall and process CPU time since it was started."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rate(self, items: int) -> Rate:
        return Rate(items, time.perf_counter() - self.wall, time.process_time() - self.cpu)


def _default_batch_size() -> int:
    from services.auditor.config import Settings

    return int(Settings.model_fields["batch_size"].default)


def _settle() -> None:
    """Collect the garbage the caller left (the synthetic events of a run before), so a measurement does not
    pay for a full collection of the caller's heap; `baton audit verify` runs in a process of its own."""
    gc.collect()


def _partition(workflow_id: str, partitions: int) -> int:
    return zlib.crc32(workflow_id.encode()) % partitions


_LIVE_WORKFLOWS = 100


async def synthetic_records(
    n: int,
    *,
    workflows: int | None = None,
    partitions: int = 4,
    context_bytes: int = 512,
    serde: AvroSerde | None = None,
) -> list[BusRecord]:
    """n encoded events (task, step request with a context, handoff), keyed by workflow over three topics of
    `partitions` partitions, with consecutive offsets per partition.

    workflows=None: as traffic arrives, 100 workflows live at a time, each ends after its three events and
    new ones start (n/3 workflows in all); workflows=W: round robin over W workflows for the whole run."""
    live = workflows or min(_LIVE_WORKFLOWS, max(1, n // 3))
    serde = serde or AvroSerde(LocalSchemaRegistry())
    offsets: dict[tuple[str, int], int] = {}
    out: list[BusRecord] = []
    step_topic = topics.agent_steps("ticket_lookup")
    i = 0
    while len(out) < n:
        wf = f"wf-{i % workflows}" if workflows else f"wf-{(i // (3 * live)) * live + i % live}"
        env = Envelope(workflow_id=wf, tenant_id=f"t{i % 3}", producer="bench", step_seq=i)
        snap = make_snapshot({"customer_id": f"c-{i}", "notes": "x" * context_bytes}, version=1)
        kind = (i // live) % 3
        event: Event
        if kind == 0:
            topic, event = (
                topics.TASKS,
                TaskRequested(envelope=env, workflow_type="support_refund", input_json="{}", requested_by="bench"),
            )
        elif kind == 1:
            topic, event = step_topic, StepRequested(envelope=env, agent="ticket_lookup", attempt=1, snapshot=snap)
        else:
            topic = topics.HANDOFF_PROPOSALS
            event = HandoffProposed(envelope=env, from_agent="ticket_lookup", to_agent="refund", snapshot=snap)
        p = _partition(wf, partitions)
        offset = offsets.get((topic, p), 0)
        offsets[(topic, p)] = offset + 1
        out.append(BusRecord(topic, p, offset, wf.encode(), await serde.encode(event)))
        i += 1
    return out


async def audit_documents(records: Sequence[BusRecord], serde: AvroSerde | None = None) -> list[Record]:
    """The documents the auditor stores for these records (decoded, described, chained), built without a store."""
    serde = serde or AvroSerde(LocalSchemaRegistry())
    chain = AuditChain()
    docs: list[Record] = []
    for r in records:
        content = describe(r, await serde.decode(r.value), None)
        linked = chain.link(content, duplicate_of=None)
        linked["_id"] = record_id(r.topic, r.partition, r.offset)
        docs.append(linked)
    return docs


async def auditor_append_rate(
    store: AuditStore,
    n: int,
    *,
    batch_size: int | None = None,
    workflows: int | None = None,
    partitions: int = 4,
    signing_key: Ed25519PrivateKey | None = None,
) -> Rate:
    """The auditor's handler appending n synthetic events in batches of batch_size to a set-up, empty store
    (anchors signed with signing_key, so verify_rate can check the store afterwards); batch_size None: the
    auditor's configured default (BATON_AUDITOR_BATCH_SIZE's)."""
    from services.auditor.handlers import AuditorHandlers

    batch_size = batch_size or _default_batch_size()
    serde = AvroSerde(LocalSchemaRegistry())
    records = await synthetic_records(n, workflows=workflows, partitions=partitions, serde=serde)
    handlers = AuditorHandlers(
        store,
        serde,
        signing_key=signing_key or generate_signing_key(),
        anchor_every=1000,
        auditor_id="bench",
        sinks=[StoreAnchorSink(store)],
    )
    clock = _Clock()
    for i in range(0, len(records), batch_size):
        await handlers.on_batch(records[i : i + batch_size])
    await handlers.anchor()
    rate = clock.rate(n)
    if handlers.appended != n:
        raise RuntimeError(f"the auditor appended {handlers.appended} of {n} records: the store was not empty?")
    return rate


async def bare_insert_rate(
    store: AuditStore,
    n: int,
    *,
    batch_size: int | None = None,
    workflows: int | None = None,
    partitions: int = 4,
    indexed: bool = False,
) -> Rate:
    """The baseline of auditor_append_rate: the same documents inserted in the same batches into a scratch
    collection (MongoDB: insert_many, ordered, the store's write concern) or table (SQLite: one transaction
    per batch, the store's synchronous mode) of the same database, with no index but the id (indexed=True:
    MongoDB only, with the audit collection's indexes too, to tell the indexes' cost from the auditor's)."""
    batch_size = batch_size or _default_batch_size()
    docs = await audit_documents(await synthetic_records(n, workflows=workflows, partitions=partitions))
    scratch = f"bare_insert_{uuid.uuid4().hex[:8]}"
    from baton.audit.mongo_store import MongoAuditStore, create_record_indexes, stored_document
    from baton.audit.sqlite_store import SqliteAuditStore

    if isinstance(store, MongoAuditStore):
        collection = store.records.database.get_collection(scratch, write_concern=store.records.write_concern)
        prepared = [stored_document(d) for d in docs]
        if indexed:
            await create_record_indexes(collection)
        try:
            clock = _Clock()
            for i in range(0, len(prepared), batch_size):
                await collection.insert_many(prepared[i : i + batch_size], ordered=True)
            rate = clock.rate(n)
        finally:
            await collection.drop()
        return rate
    if isinstance(store, SqliteAuditStore):
        return await asyncio.to_thread(_sqlite_bare_insert, store, scratch, docs, batch_size)
    raise TypeError(f"no bare insert baseline for {type(store).__name__}")


def _sqlite_bare_insert(store: object, table: str, docs: list[Record], batch_size: int) -> Rate:
    import sqlite3

    from baton.audit.sqlite_store import SqliteAuditStore

    assert isinstance(store, SqliteAuditStore)
    db = sqlite3.connect(store.path, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"CREATE TABLE {table} (record_id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
        clock = _Clock()
        for i in range(0, len(docs), batch_size):
            rows = [
                (d["_id"], json.dumps({k: v for k, v in d.items() if k != "_id"})) for d in docs[i : i + batch_size]
            ]
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"INSERT INTO {table} (record_id, doc) VALUES (?, ?)", rows)
            db.execute("COMMIT")
        rate = clock.rate(len(docs))
        db.execute(f"DROP TABLE {table}")
        return rate
    finally:
        db.close()


async def verify_rate(store: AuditStore, public_key: Ed25519PublicKey) -> tuple[Rate, VerifyReport]:
    """`baton audit verify`'s check of the whole store (both chains, hashes, the store's own anchors)."""
    _settle()
    clock = _Clock()
    report = await verify_store(store, public_key)
    return clock.rate(report.records), report


async def bare_scan_rate(store: AuditStore) -> Rate:
    """The baseline of verify_rate: read every stored record's bytes once in verify's order, checking nothing
    (SQLite: the rows as stored; MongoDB: the documents decoded by the driver)."""
    from baton.audit.mongo_store import MongoAuditStore
    from baton.audit.sqlite_store import SqliteAuditStore

    _settle()
    if isinstance(store, MongoAuditStore):
        clock = _Clock()
        count = 0
        async for _ in store.records.find({}).sort([("topic", 1), ("partition", 1), ("offset", 1)]).batch_size(5000):
            count += 1
        return clock.rate(count)
    if isinstance(store, SqliteAuditStore):
        return await asyncio.to_thread(_sqlite_bare_scan, store.path)
    raise TypeError(f"no bare scan baseline for {type(store).__name__}")


def _sqlite_bare_scan(path: object) -> Rate:
    import sqlite3

    db = sqlite3.connect(f"{path}", timeout=30)
    try:
        clock = _Clock()
        cursor = db.execute('SELECT record_id, doc FROM audit_records ORDER BY topic, partition, "offset"')
        count = 0
        digest = hashlib.sha256()  # touch the bytes, as a reader must
        while rows := cursor.fetchmany(5000):
            count += len(rows)
            digest.update(rows[-1][1].encode() if isinstance(rows[-1][1], str) else rows[-1][1])
        return clock.rate(count)
    finally:
        db.close()
