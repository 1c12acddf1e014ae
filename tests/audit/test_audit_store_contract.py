"""Both audit stores (embedded SQLite, MongoDB over the wire against FerretDB) pass the same contract:
exactly-once append with two hash chains, and `verify` catches every kind of tampering."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from baton.audit.anchors import StoreAnchorSink
from baton.audit.chain import Record, record_hash
from baton.audit.keys import generate_signing_key
from baton.audit.mongo_store import MongoAuditStore
from baton.audit.sqlite_store import SqliteAuditStore, stored_row
from baton.audit.store import AuditStore
from baton.audit.verify import verify_store
from baton.bus.base import BusRecord
from baton.context import make_snapshot
from baton.contracts.models import Envelope, Event, HandoffProposed, StepRequested, TaskRequested
from baton.contracts.serde import AvroSerde
from baton_demo.perf.audit import synthetic_records
from services.auditor.handlers import AuditorHandlers

KEY = generate_signing_key()
PUBLIC = KEY.public_key()


class Tamper:
    """An attacker with write access to the store, bypassing the auditor."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    async def docs(self) -> list[Record]:
        return [d async for d in self.store.stream()]

    async def replace(self, record_id: str, doc: Record) -> None:
        if isinstance(self.store, SqliteAuditStore):
            db = sqlite3.connect(self.store.path)
            db.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
            # Written exactly as the store writes a row: bytes, hash and chain columns agree.
            row = stored_row(doc | {"_id": record_id})
            db.execute(
                'UPDATE audit_records SET topic = ?, partition = ?, "offset" = ?, event_id = ?, workflow_id = ?, '
                "workflow_seq = ?, doc = ?, hash = ?, workflow_prev_hash = ?, payload_at = ?, payload_end = ? "
                "WHERE record_id = ?",
                (*row[1:], record_id),
            )
            db.commit()
            db.close()
        else:
            assert isinstance(self.store, MongoAuditStore)
            await self.store.records.replace_one({"_id": record_id}, {k: v for k, v in doc.items() if k != "_id"})

    async def delete(self, record_ids: Sequence[str]) -> None:
        if isinstance(self.store, SqliteAuditStore):
            db = sqlite3.connect(self.store.path)
            db.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
            db.executemany("DELETE FROM audit_records WHERE record_id = ?", [(r,) for r in record_ids])
            db.commit()
            db.close()
        else:
            assert isinstance(self.store, MongoAuditStore)
            await self.store.records.delete_many({"_id": {"$in": list(record_ids)}})

    async def insert(self, doc: Record) -> None:
        await self.store.append([doc])


async def _traffic(serde: AvroSerde, workflows: int = 3) -> list[BusRecord]:
    """A few workflows' events over two topics of two partitions, plus garbage and a redelivered event."""
    out: list[BusRecord] = []
    offsets: dict[tuple[str, int], int] = {}

    def put(topic: str, partition: int, value: bytes, key: str) -> None:
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        out.append(BusRecord(topic, partition, offset, key.encode(), value))

    for w in range(workflows):
        wf = f"wf-{w}"
        p = w % 2
        env = Envelope(workflow_id=wf, tenant_id="t1", producer="test")
        snap = make_snapshot({"customer_id": f"c-{w}"}, version=1)
        events: list[tuple[str, Event]] = [
            (
                "baton.tasks",
                TaskRequested(envelope=env, workflow_type="customer_onboarding", input_json="{}", requested_by="crm"),
            ),
            (
                "baton.agents.x.steps",
                StepRequested(
                    envelope=env.model_copy(update={"event_id": str(uuid.uuid4())}), agent="x", attempt=1, snapshot=snap
                ),
            ),
            (
                "baton.handoffs.proposed",
                HandoffProposed(
                    envelope=env.model_copy(update={"event_id": str(uuid.uuid4())}),
                    from_agent="x",
                    to_agent="y",
                    snapshot=make_snapshot({"customer_id": f"c-{w}", "ok": True}, version=2, parent=snap),
                ),
            ),
        ]
        for topic, ev in events:
            put(topic, p, await serde.encode(ev), wf)
        put("baton.tasks", p, b"\x01 not avro", wf)
        put("baton.handoffs.proposed", p, await serde.encode(events[2][1]), wf)  # same event again
    return out


async def _audit(store: AuditStore, serde: AvroSerde, records: Sequence[BusRecord], batch: int = 4) -> AuditorHandlers:
    handlers = AuditorHandlers(
        store, serde, signing_key=KEY, anchor_every=5, auditor_id="test-auditor", sinks=[StoreAnchorSink(store)]
    )
    for i in range(0, len(records), batch):
        await handlers.on_batch(records[i : i + batch])
    await handlers.anchor()
    return handlers


async def test_every_message_is_appended_once_with_both_chains(store: AuditStore, serde: AvroSerde) -> None:
    records = await _traffic(serde)
    handlers = await _audit(store, serde, records)
    assert await store.count() == len(records)
    again = await _audit(store, serde, records, batch=7)  # everything redelivered after a restart
    assert again.appended == 0 and again.skipped == len(records)
    assert await store.count() == len(records)
    report = await verify_store(store, PUBLIC)
    assert report.ok, report.problems
    assert report.records == len(records) and report.workflows == 3 + 3 and report.anchors >= 2
    docs = [d async for d in store.stream_by_workflow("wf-0")]
    assert [d["workflow_seq"] for d in docs] == list(range(1, 5))
    assert {d["event_type"] for d in docs} == {"TaskRequested", "StepRequested", "HandoffProposed"}
    [garbage] = [d async for d in store.stream_by_workflow("undecodable:wf-0")]  # keyed wf-0, own chain
    assert garbage["event_type"] == "Undecodable" and garbage["workflow_seq"] == 1
    [dup] = [d for d in docs if d["duplicate_of"]]
    assert dup["event_id"].startswith(dup["duplicate_of"] + "#dup@")
    assert handlers.appended == len(records)


async def test_a_crash_in_the_middle_of_a_batch_neither_loses_nor_duplicates(
    store: AuditStore, serde: AvroSerde
) -> None:
    records = await _traffic(serde)

    class CrashingStore:
        def __init__(self, inner: AuditStore) -> None:
            self.inner, self.crashed = inner, False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def append(self, batch: Sequence[Record]) -> None:
            if not self.crashed and len(batch) > 3:
                self.crashed = True
                await self.inner.append(batch[:3])  # the store took part of the batch, then the process died
                raise ConnectionError("killed mid-batch")
            await self.inner.append(batch)

    crashing = CrashingStore(store)
    first = AuditorHandlers(crashing, serde, signing_key=KEY, anchor_every=100, auditor_id="a1")
    with pytest.raises(ConnectionError):
        await first.on_batch(records[:8])
    # the bus did not commit: a restarted auditor gets the whole batch again, then the rest
    second = AuditorHandlers(
        store, serde, signing_key=KEY, anchor_every=100, auditor_id="a2", sinks=[StoreAnchorSink(store)]
    )
    await second.on_batch(records[:8])
    await second.on_batch(records[8:])
    await second.anchor()
    assert second.skipped == 3
    assert await store.count() == len(records)
    assert (await verify_store(store, PUBLIC)).ok


async def _first_problem(store: AuditStore) -> str:
    report = await verify_store(store, PUBLIC)
    assert not report.ok, "tampering went unnoticed"
    return report.problems[0]


async def _problems(store: AuditStore) -> str:
    report = await verify_store(store, PUBLIC)
    assert not report.ok, "tampering went unnoticed"
    return "\n".join(report.problems)


async def test_verify_catches_a_modified_payload(store: AuditStore, serde: AvroSerde) -> None:
    await _audit(store, serde, await _traffic(serde))
    victim = (await Tamper(store).docs())[4]
    victim["payload"]["workflow_type"] = "something_else"
    await Tamper(store).replace(victim["_id"], victim)
    problem = await _first_problem(store)
    assert victim["_id"] in problem and "modified" in problem


async def test_verify_catches_a_modified_record_even_with_its_hash_recomputed(
    store: AuditStore, serde: AvroSerde
) -> None:
    await _audit(store, serde, await _traffic(serde))
    victim = (await Tamper(store).docs())[2]
    victim["tenant_id"] = "attacker"
    victim["hash"] = record_hash(victim)  # the attacker knows the hash function, not the key
    await Tamper(store).replace(victim["_id"], victim)
    problems = await _problems(store)
    # the next record no longer links to it, or (the last of its partition) a signed anchor names another hash
    assert "partition chain broken" in problems or (victim["_id"] in problems and "rewritten" in problems)


async def test_verify_catches_a_deleted_record(store: AuditStore, serde: AvroSerde) -> None:
    await _audit(store, serde, await _traffic(serde))
    docs = await Tamper(store).docs()
    await Tamper(store).delete([docs[3]["_id"]])
    problem = await _first_problem(store)
    assert docs[4]["_id"] in problem and "missing" in problem


async def test_verify_catches_a_forged_record(store: AuditStore, serde: AvroSerde) -> None:
    await _audit(store, serde, await _traffic(serde))
    last = (await Tamper(store).docs())[-1]
    forged = dict(
        last,
        _id=f"{last['topic']}/{last['partition']}/{last['offset'] + 1}",
        offset=last["offset"] + 1,
        event_id="forged-event",
        partition_prev_hash=last["hash"],
        payload={"refund": 10_000},
    )
    forged["hash"] = record_hash(forged)
    await Tamper(store).insert(forged)
    problems = await _problems(store)
    assert f"{last['topic']}/{last['partition']}: records {forged['offset']}-{forged['offset']}" in problems
    assert "unauthenticated" in problems


async def test_verify_catches_two_records_swapped(store: AuditStore, serde: AvroSerde) -> None:
    await _audit(store, serde, await _traffic(serde))
    docs = await Tamper(store).docs()
    i = next(
        i
        for i in range(len(docs) - 1)
        if (docs[i]["topic"], docs[i]["partition"]) == (docs[i + 1]["topic"], docs[i + 1]["partition"])
    )
    a, b = docs[i], docs[i + 1]
    moved_a = {k: v for k, v in b.items() if k != "_id"} | {"offset": a["offset"]}
    moved_b = {k: v for k, v in a.items() if k != "_id"} | {"offset": b["offset"]}
    await Tamper(store).delete([a["_id"], b["_id"]])
    await Tamper(store).insert(moved_a | {"_id": a["_id"]})
    await Tamper(store).insert(moved_b | {"_id": b["_id"]})
    problem = await _first_problem(store)
    assert a["_id"] in problem


async def test_verify_catches_a_cut_tail_through_the_signed_anchors(store: AuditStore, serde: AvroSerde) -> None:
    await _audit(store, serde, await _traffic(serde))
    docs = await Tamper(store).docs()
    sizes: dict[tuple[str, int], int] = {}
    for d in docs:
        sizes[(d["topic"], d["partition"])] = sizes.get((d["topic"], d["partition"]), 0) + 1
    tp = max(sizes, key=lambda k: sizes[k])
    assert sizes[tp] >= 4
    tail = [d["_id"] for d in docs if (d["topic"], d["partition"]) == tp][-2:]
    await Tamper(store).delete(tail)
    problem = await _first_problem(store)
    assert f"{tp[0]}/{tp[1]}" in problem and "cut off the tail" in problem


async def test_large_batches_append_in_one_call_each_and_verify(store: AuditStore, serde: AvroSerde) -> None:
    records = await _traffic(serde, workflows=40)
    appends: list[int] = []

    class CountingStore:
        def __init__(self, inner: AuditStore) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def append(self, batch: Sequence[Record]) -> None:
            appends.append(len(batch))
            await self.inner.append(batch)

    handlers = AuditorHandlers(
        CountingStore(store),
        serde,
        signing_key=KEY,
        anchor_every=1000,
        auditor_id="big",
        sinks=[StoreAnchorSink(store)],
    )
    await handlers.on_batch(records[:150])
    await handlers.on_batch(records[150:])
    await handlers.anchor()
    assert appends == [150, len(records) - 150]
    assert await store.count() == len(records)
    report = await verify_store(store, PUBLIC)
    assert report.ok, report.problems
    assert report.workflows == 40 + 40
    for w in (0, 39):  # each workflow's chain: its task first, then its step and handoff
        docs = [d async for d in store.stream_by_workflow(f"wf-{w}")]
        assert [d["workflow_seq"] for d in docs] == [1, 2, 3, 4]
        assert docs[0]["event_type"] == "TaskRequested"


async def test_heads_restored_after_a_reassignment_continue_each_chain(store: AuditStore, serde: AvroSerde) -> None:
    """Partition 1 moves from auditor A to B and back: B and then A continue its workflows' chains from
    the stored heads (no fork, no restart at sequence 1), and a brand-new workflow costs no look-up."""
    records = await _traffic(serde, workflows=6)  # even workflows on partition 0, odd on partition 1
    half = len(records) // 2
    p1 = frozenset({("baton.tasks", 1), ("baton.agents.x.steps", 1), ("baton.handoffs.proposed", 1)})
    p0 = frozenset((t, 0) for t, _ in p1)
    a = AuditorHandlers(
        store, serde, signing_key=KEY, anchor_every=1000, auditor_id="a", sinks=[StoreAnchorSink(store)]
    )
    await a.on_assign(p0 | p1)
    await a.on_batch(records[:half])
    await a.on_revoke(p1)  # a rebalance: B takes partition 1
    b = AuditorHandlers(
        store, serde, signing_key=KEY, anchor_every=1000, auditor_id="b", sinks=[StoreAnchorSink(store)]
    )
    await b.on_assign(p1)
    rest = records[half:]
    await b.on_batch([r for r in rest if r.partition == 1][:4])
    await b.on_revoke(p1)  # B leaves: partition 1 comes back to A
    await a.on_assign(p1)
    await a.on_batch([r for r in rest if r.partition == 0] + [r for r in rest if r.partition == 1][4:])
    await a.anchor()
    assert await store.count() == len(records)
    report = await verify_store(store, PUBLIC)
    assert report.ok, report.problems
    for w in range(6):
        seqs = [d["workflow_seq"] async for d in store.stream_by_workflow(f"wf-{w}")]
        assert seqs == [1, 2, 3, 4], (w, seqs)
    # The restores told A and B which workflows had records: every other workflow was new, never looked up.
    assert a.workflow_lookups == 0 and b.workflow_lookups == 0


async def test_an_evicted_workflow_head_is_read_back_once_and_its_chain_continues(
    store: AuditStore, serde: AvroSerde, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.auditor.handlers as handlers_module

    monkeypatch.setattr(handlers_module, "_CACHED_WORKFLOWS", 2)
    records = await synthetic_records(36, workflows=6, partitions=2, serde=serde)  # wf-0..5, round robin
    handlers = await _audit(store, serde, records, batch=4)
    assert len(handlers._chain.workflows) <= 2
    # Each workflow's chain continues across evictions: its head was read back when it came again.
    report = await verify_store(store, PUBLIC)
    assert report.ok, report.problems
    for w in range(6):
        assert [d["workflow_seq"] async for d in store.stream_by_workflow(f"wf-{w}")] == [1, 2, 3, 4, 5, 6]
    # Looked up only when coming back after an eviction, never for a new workflow (6 of them).
    assert 0 < handlers.workflow_lookups <= len(records) - 6


async def test_verify_catches_chain_columns_that_disagree_with_the_hashed_bytes(
    tmp_path: Any, serde: AvroSerde
) -> None:
    """The embedded store's fast verify reads workflow links from columns and splits the stored bytes
    around the payload: tampering with either, bytes untouched, is caught."""
    store = SqliteAuditStore(tmp_path / "audit.db")
    await store.setup()
    await _audit(store, serde, await _traffic(serde))
    docs = await Tamper(store).docs()
    victim = next(d for d in docs if d["workflow_seq"] == 2)
    db = sqlite3.connect(store.path)
    db.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
    db.execute(
        "UPDATE audit_records SET workflow_seq = 1, workflow_prev_hash = NULL WHERE record_id = ?", (victim["_id"],)
    )
    db.commit()
    problems = await _problems(store)
    assert victim["_id"] in problems and "workflow columns differ" in problems
    # Split points moved into the payload: the parts no longer parse alone, the whole is read instead.
    db.execute(
        "UPDATE audit_records SET workflow_seq = ?, workflow_prev_hash = ? WHERE record_id = ?",
        (victim["workflow_seq"], victim["workflow_prev_hash"], victim["_id"]),
    )
    db.execute("UPDATE audit_records SET payload_at = payload_at + 2, payload_end = payload_end - 2")
    db.commit()
    db.close()
    report = await verify_store(store, PUBLIC)
    assert report.ok, report.problems
    await store.close()


async def test_a_write_failing_mid_batch_while_the_next_chunk_is_linked_loses_and_duplicates_nothing(
    store: AuditStore, serde: AvroSerde, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.auditor.handlers as handlers_module

    monkeypatch.setattr(handlers_module, "_CHUNK", 3)
    records = await _traffic(serde, workflows=4)
    writes: list[int] = []

    class SecondWriteFails:
        def __init__(self, inner: AuditStore) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def append(self, batch: Sequence[Record]) -> None:
            writes.append(len(batch))
            if len(writes) == 2:
                await self.inner.append(batch[:1])  # the store took one record, then the connection broke
                raise ConnectionError("connection reset mid-write")
            await self.inner.append(batch)

    handlers = AuditorHandlers(
        SecondWriteFails(store),
        serde,
        signing_key=KEY,
        anchor_every=1000,
        auditor_id="a",
        sinks=[StoreAnchorSink(store)],
    )
    with pytest.raises(ConnectionError):
        await handlers.on_batch(records[:12])
    assert len(writes) == 2  # the third chunk was never written: nothing runs behind the failure
    assert await store.count() == 3 + 1
    await handlers.on_batch(records[:12])  # the bus did not commit: the whole batch again
    await handlers.on_batch(records[12:])
    await handlers.anchor()
    # 4 records were stored before the failure, 3 acknowledged (counted) and one not: skipped on the retry
    assert handlers.skipped == 4 and handlers.appended == len(records) - 1
    assert await store.count() == len(records)
    report = await verify_store(store, PUBLIC)
    assert report.ok, report.problems


async def test_the_embedded_stores_fast_verify_agrees_with_the_generic_one(tmp_path: Any, serde: AvroSerde) -> None:
    """verify_store reads the SQLite store's hashed bytes directly; through any other store it reads records.
    Both find the same: nothing on an intact store, the same first problem on a tampered one."""

    class Records:  # the store seen only through the AuditStore protocol: verify takes the generic path
        def __init__(self, inner: AuditStore) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    store = SqliteAuditStore(tmp_path / "audit.db")
    await store.setup()
    await _audit(store, serde, await _traffic(serde))
    fast, generic = await verify_store(store, PUBLIC), await verify_store(Records(store), PUBLIC)
    assert fast.ok and generic.ok, (fast.problems, generic.problems)
    assert (fast.records, fast.partitions, fast.workflows) == (generic.records, generic.partitions, generic.workflows)
    for i in (2, 4):
        victim = (await Tamper(store).docs())[i]
        victim["tenant_id"] = "attacker"
        victim["hash"] = record_hash(victim)
        await Tamper(store).replace(victim["_id"], victim)
        fast, generic = await verify_store(store, PUBLIC), await verify_store(Records(store), PUBLIC)
        assert not fast.ok and fast.problems == generic.problems
    docs = await Tamper(store).docs()
    await Tamper(store).delete([docs[7]["_id"], docs[12]["_id"]])  # holes in partition and workflow chains
    fast, generic = await verify_store(store, PUBLIC), await verify_store(Records(store), PUBLIC)
    assert any("jumps from sequence" in p for p in fast.problems)
    assert fast.problems == generic.problems and fast.workflows == generic.workflows
    await store.close()
