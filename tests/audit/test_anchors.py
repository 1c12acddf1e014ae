"""Signed anchors outside the store, attacked the way an attacker with write access to the store would:
cut the tail with its anchors, empty the store, re-chain it with another key, forge an anchor. Each
fails verification naming what is missing or wrong; the store alone cannot tell a cut, the outside can."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from baton.audit.anchors import FileAnchorSink, StoreAnchorSink, make_anchors
from baton.audit.chain import Head
from baton.audit.completeness import TopicPartition, verify_audit
from baton.audit.keys import generate_signing_key, key_id
from baton.audit.mongo_store import MongoAuditStore
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.store import AuditStore
from baton.audit.verify import VerifyReport, verify_store
from baton.bus.base import BusRecord
from baton.contracts.serde import AvroSerde
from services.auditor.handlers import AuditorHandlers
from tests.audit.test_audit_store_contract import Tamper, _traffic

KEY = generate_signing_key()
PUBLIC = KEY.public_key()


class ListLog:
    """The bus as the auditor's group left it: these records, every one consumed and committed."""

    def __init__(self, records: Sequence[BusRecord]) -> None:
        self.records = list(records)

    async def committed(self, group_id: str, audited: Sequence[str]) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for r in self.records:
            if r.topic in audited:
                out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
        return out

    async def digests(self, topic: str, ends: dict[int, int]) -> dict[int, dict[int, str]]:
        out: dict[int, dict[int, str]] = {p: {} for p in ends}
        for r in self.records:
            if r.topic == topic and r.partition in ends and r.offset < ends[r.partition]:
                out[r.partition][r.offset] = hashlib.sha256(r.value).hexdigest()
        return out


class Audit:
    """An audited store, its anchor file, and the log it came from."""

    def __init__(self, store: AuditStore, anchor_file: Path, records: Sequence[BusRecord]) -> None:
        self.store, self.anchor_file, self.log = store, anchor_file, ListLog(records)
        self.topics = sorted({r.topic for r in records})

    async def verify(self, *, outside: bool = True, log: bool = True) -> VerifyReport:
        report, _ = await verify_audit(
            self.store,
            PUBLIC,
            anchor_file=self.anchor_file if outside else None,
            log=self.log if log else None,
            audited=self.topics,
        )
        return report

    async def tail(self) -> tuple[TopicPartition, list[str]]:
        """The longest partition and its record ids."""
        by_tp: dict[TopicPartition, list[str]] = {}
        for d in await Tamper(self.store).docs():
            by_tp.setdefault((d["topic"], d["partition"]), []).append(d["_id"])
        tp = max(by_tp, key=lambda k: len(by_tp[k]))
        return tp, by_tp[tp]


async def _delete_anchors(store: AuditStore, *, tp: TopicPartition | None = None, from_offset: int = 0) -> None:
    """Delete the store's anchors (of one partition from an offset on, or all)."""
    if isinstance(store, SqliteAuditStore):
        db = sqlite3.connect(store.path)
        db.execute("DROP TRIGGER IF EXISTS audit_anchors_no_delete")
        for anchor_id, doc in db.execute("SELECT anchor_id, doc FROM audit_anchors").fetchall():
            a = json.loads(doc)
            if tp is None or ((a["topic"], a["partition"]) == tp and a["offset"] >= from_offset):
                db.execute("DELETE FROM audit_anchors WHERE anchor_id = ?", (anchor_id,))
        db.commit()
        db.close()
    else:
        assert isinstance(store, MongoAuditStore)
        query = {} if tp is None else {"topic": tp[0], "partition": tp[1], "offset": {"$gte": from_offset}}
        await store.anchors_collection.delete_many(query)


async def _audit(
    store: AuditStore,
    serde: AvroSerde,
    records: Sequence[BusRecord],
    anchor_file: Path,
    key: Ed25519PrivateKey = KEY,
) -> AuditorHandlers:
    handlers = AuditorHandlers(
        store,
        serde,
        signing_key=key,
        anchor_every=5,
        auditor_id="test-auditor",
        sinks=[StoreAnchorSink(store), FileAnchorSink(anchor_file)],
    )
    for i in range(0, len(records), 4):
        await handlers.on_batch(records[i : i + 4])
    await handlers.anchor()
    return handlers


@pytest.fixture
async def audit(store: AuditStore, serde: AvroSerde, tmp_path: Path) -> Audit:
    records = await _traffic(serde)
    await _audit(store, serde, records, tmp_path / "anchors.jsonl")
    return Audit(store, tmp_path / "anchors.jsonl", records)


async def test_an_untouched_audit_verifies_against_the_log_and_the_outside_anchors(audit: Audit) -> None:
    report = await audit.verify()
    assert report.ok, report.problems
    assert report.log_records == len(audit.log.records) == report.records
    assert report.anchored  # every partition's newest anchor came from the file


async def test_cutting_the_tail_with_its_anchors_fails_naming_the_missing_offsets(audit: Audit) -> None:
    tp, ids = await audit.tail()
    cut = ids[-2:]
    first_cut = int(cut[0].rsplit("/", 1)[1])
    await Tamper(audit.store).delete(cut)
    await _delete_anchors(audit.store, tp=tp, from_offset=first_cut)
    # What the store alone says is not proof: its own anchors were cut with it.
    assert (await audit.verify(outside=False, log=False)).ok
    problems = "\n".join((await audit.verify()).problems)
    name = f"{tp[0]}/{tp[1]}"
    assert f"partition {name}: a signed anchor covers offset {first_cut + 1}" in problems
    assert "cut off the tail" in problems
    assert f"{name}: offsets {first_cut}-{first_cut + 1} (2 record(s)) are in the log" in problems
    assert "not in the store: deleted" in problems


async def test_emptying_the_store_fails_naming_every_partition(audit: Audit) -> None:
    ids = [d["_id"] for d in await Tamper(audit.store).docs()]
    await Tamper(audit.store).delete(ids)
    await _delete_anchors(audit.store)
    assert (await audit.verify(outside=False, log=False)).ok  # an empty store alone looks fine
    report = await audit.verify()
    problems = "\n".join(report.problems)
    for tp in await audit.log.committed("", audit.topics):
        assert f"partition {tp[0]}/{tp[1]}: signed anchors cover offsets up to" in problems
        assert f"{tp[0]}/{tp[1]}: offsets 0" in problems
    assert "were deleted" in problems and "not in the store: deleted" in problems


async def test_rewriting_and_rechaining_with_another_key_fails(audit: Audit, serde: AvroSerde) -> None:
    # The attacker rewrites one message, empties the store and re-audits everything with a key of theirs,
    # writing their anchors to the store and appending them to the anchor file too.
    records = list(audit.log.records)
    victim = next(i for i, r in enumerate(records) if r.value.startswith(b"\x01 not avro"))
    records[victim] = BusRecord(
        records[victim].topic, records[victim].partition, records[victim].offset, None, b"\x01 rewritten"
    )
    await Tamper(audit.store).delete([d["_id"] for d in await Tamper(audit.store).docs()])
    await _delete_anchors(audit.store)
    attacker = generate_signing_key()
    await _audit(audit.store, serde, records, audit.anchor_file, key=attacker)
    alone = "\n".join((await audit.verify(outside=False, log=False)).problems)
    assert f"it names key {key_id(attacker.public_key())}, not the configured public key {key_id(PUBLIC)}" in alone
    assert "no signed anchor covers any of its records" in alone
    problems = "\n".join((await audit.verify()).problems)
    assert "signed with another key" in problems
    assert "rewritten (re-chained) after it was anchored" in problems
    name = f"{records[victim].topic}/{records[victim].partition}"
    assert f"{name}: offsets {records[victim].offset}: the stored record's raw_sha256 differs" in problems


async def test_a_forged_or_altered_anchor_fails(audit: Audit) -> None:
    lines = audit.anchor_file.read_text().splitlines()
    newest = json.loads(lines[-1])
    moved = dict(newest, offset=newest["offset"] + 5)  # claim more than was audited, keep the signature
    audit.anchor_file.write_text("\n".join([*lines, json.dumps(moved)]) + "\n")
    problems = "\n".join((await audit.verify()).problems)
    assert f"anchor {newest['anchor_id']} ({newest['topic']}/{newest['partition']}@{newest['offset'] + 5})" in problems
    assert "signature does not verify: altered or forged" in problems


async def test_an_anchor_signed_with_another_key_is_named_as_such(tmp_path: Path) -> None:
    store = SqliteAuditStore(tmp_path / "audit.db")
    await store.setup()
    other = generate_signing_key()
    [anchor] = make_anchors({("baton.tasks", 0): Head(3, "00" * 32)}, key=other, auditor_id="x", records_appended=4)
    report = await verify_store(store, PUBLIC, anchors=[anchor])
    assert report.problems == [
        f"anchor {anchor['anchor_id']} (baton.tasks/0@3): signature does not verify: it names key "
        f"{key_id(other.public_key())}, not the configured public key {key_id(PUBLIC)}: signed with another key"
    ]  # and, untrusted, it claims nothing
    await store.close()


async def test_records_after_the_newest_anchor_are_unauthenticated(audit: Audit, serde: AvroSerde) -> None:
    extra = await _traffic(serde, workflows=1)
    handlers = AuditorHandlers(audit.store, serde, signing_key=KEY, anchor_every=10_000, auditor_id="no-anchor")
    shifted = [BusRecord(r.topic, r.partition, r.offset + 100, r.key, r.value) for r in extra]
    await handlers.on_batch(shifted)  # gap_from marks the jump; no anchor follows (no sinks)
    problems = "\n".join((await audit.verify(log=False)).problems)
    assert "follow the newest signed anchor" in problems and "unauthenticated" in problems


async def test_a_tail_cut_while_the_auditor_was_down_is_caught_after_it_resumes(audit: Audit, serde: AvroSerde) -> None:
    """The restarted auditor links its next record over the hole (it looks like offsets the broker
    skipped); the anchors outside still name the deleted offsets."""
    tp, ids = await audit.tail()
    cut = ids[-2:]
    await Tamper(audit.store).delete(cut)
    await _delete_anchors(audit.store, tp=tp, from_offset=int(cut[0].rsplit("/", 1)[1]))
    last = max(r.offset for r in audit.log.records if (r.topic, r.partition) == tp)
    more = [BusRecord(tp[0], tp[1], last + 1, b"wf-9", b"\x01 after the cut")]
    await _audit(audit.store, serde, more, audit.anchor_file)
    problems = "\n".join((await audit.verify(log=False)).problems)
    first, second = (int(i.rsplit("/", 1)[1]) for i in cut)
    assert f"partition {tp[0]}/{tp[1]}: signed anchors cover offsets {second}" in problems
    assert "holds no record there: deleted" in problems
    assert first + 1 == second


async def test_a_restarted_auditor_anchors_the_tail_a_crash_left_unsigned(
    store: AuditStore, serde: AvroSerde, tmp_path: Path
) -> None:
    records = await _traffic(serde)
    crashed = AuditorHandlers(store, serde, signing_key=KEY, anchor_every=10_000, auditor_id="crashed")
    for i in range(0, len(records), 4):
        await crashed.on_batch(records[i : i + 4])  # stored and committed, never anchored: then SIGKILL
    log = ListLog(records)
    ends = await log.committed("", sorted({r.topic for r in records}))

    async def end_offsets(topic: str) -> dict[int, int]:
        return {p: end for (t, p), end in ends.items() if t == topic}

    restarted = AuditorHandlers(
        store,
        serde,
        signing_key=KEY,
        anchor_every=10_000,
        auditor_id="restarted",
        sinks=[FileAnchorSink(tmp_path / "anchors.jsonl")],
        end_offsets=end_offsets,
    )
    audit = Audit(store, tmp_path / "anchors.jsonl", records)
    await restarted.on_assign(frozenset(ends))  # no new record arrives on any partition
    await restarted.anchor()
    assert restarted.anchors_published == len(ends)
    report = await audit.verify()
    assert report.ok, report.problems


async def test_a_trickle_that_never_idles_is_anchored_by_age(
    store: AuditStore, serde: AvroSerde, tmp_path: Path
) -> None:
    records = await _traffic(serde, workflows=1)
    handlers = AuditorHandlers(
        store,
        serde,
        signing_key=KEY,
        anchor_every=10_000,
        auditor_id="trickle",
        sinks=[FileAnchorSink(tmp_path / "anchors.jsonl")],
    )
    due = asyncio.create_task(handlers.anchor_when_due(idle_s=3600, max_age_s=0.05))
    try:
        await handlers.on_batch(records)

        async def anchored() -> None:
            while not handlers.anchors_published:  # noqa: ASYNC110 - anchors have no completion signal
                await asyncio.sleep(0.01)

        await asyncio.wait_for(anchored(), 10)
    finally:
        due.cancel()
    assert (await Audit(store, tmp_path / "anchors.jsonl", records).verify()).ok
