"""`baton audit verify --against-kafka`: prove from the broker that the store holds the whole log.

The broker, not the store, says what the auditor consumed: its group's committed offset of every
partition. Every record the log still holds below that offset must be in the store exactly once with
the same content hash, and the newest signed anchor (read outside the store) must cover the last one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from baton import topics
from baton.audit.anchors import read_anchor_file, read_anchor_topic
from baton.audit.chain import Record
from baton.audit.store import AuditStore
from baton.audit.verify import VerifyReport, offset_ranges, verify_store
from baton.bus.base import Bus, BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.bus.kafka import KafkaBus

TopicPartition = tuple[str, int]


class AuditedLog(Protocol):
    """What the bus holds and how far the auditor's group has consumed it; adapters: Kafka, embedded."""

    async def committed(self, group_id: str, audited: Sequence[str]) -> dict[TopicPartition, int]:
        """The group's committed offset of each partition of these topics it committed on."""
        ...

    async def digests(self, topic: str, ends: dict[int, int]) -> dict[int, dict[int, str]]:
        """Per partition, SHA-256 of the value of every record it holds below its end, by offset."""
        ...


class KafkaAuditedLog:
    """Committed offsets from the group coordinator; the log read with a group-less reader."""

    def __init__(self, bus: KafkaBus, bootstrap: str) -> None:
        self._bus = bus
        self._bootstrap = bootstrap

    async def committed(self, group_id: str, audited: Sequence[str]) -> dict[TopicPartition, int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id="baton-audit-verify")
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group_id)
        finally:
            await admin.close()
        wanted = set(audited)
        return {
            (tp.topic, tp.partition): meta.offset
            for tp, meta in offsets.items()
            if tp.topic in wanted and meta.offset >= 0
        }

    async def digests(self, topic: str, ends: dict[int, int]) -> dict[int, dict[int, str]]:
        out: dict[int, dict[int, str]] = {p: {} for p in ends}

        async def take(record: BusRecord) -> None:
            if record.offset < ends[record.partition]:
                out[record.partition][record.offset] = hashlib.sha256(record.value).hexdigest()

        await self._bus.replay([topic], take, partitions=list(ends))
        return out


class EmbeddedAuditedLog:
    """The same questions asked of the embedded bus (tests, the demo)."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self._bus = bus

    async def committed(self, group_id: str, audited: Sequence[str]) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for topic in audited:
            for p in await self._bus.end_offsets(topic):
                offset = self._bus.committed(group_id, (topic, p))
                if offset > 0:
                    out[(topic, p)] = offset
        return out

    async def digests(self, topic: str, ends: dict[int, int]) -> dict[int, dict[int, str]]:
        return {
            p: {r.offset: hashlib.sha256(r.value).hexdigest() for r in self._bus.log_of((topic, p)) if r.offset < end}
            for p, end in ends.items()
        }


async def verify_against_log(
    store: AuditStore, log: AuditedLog, *, group_id: str, audited: Sequence[str], report: VerifyReport
) -> None:
    """Add to report what the log holds below the group's committed offsets that the store lacks or
    holds differently, and each partition whose newest verified anchor stops short of its log."""
    committed = await log.committed(group_id, audited)
    if not committed:
        report.add(
            f"the broker holds no committed offsets of the auditor group {group_id}: nothing proves what the log "
            "held (is this the auditor's broker? has it consumed anything? group offsets expire after the "
            "broker's offsets.retention.minutes without a commit)"
        )
        return
    stored: dict[TopicPartition, dict[int, list[str]]] = {}
    async for doc in store.stream():
        tp = (doc["topic"], doc["partition"])
        if tp in committed:
            stored.setdefault(tp, {}).setdefault(doc["offset"], []).append(str(doc.get("raw_sha256")))
    held_by_tp: dict[TopicPartition, dict[int, str]] = {}
    for topic in sorted({t for t, _ in committed}):
        ends = {p: end for (t, p), end in committed.items() if t == topic}
        for p, digests in (await log.digests(topic, ends)).items():
            held_by_tp[(topic, p)] = digests
    for tp, end in sorted(committed.items()):
        name = f"{tp[0]}/{tp[1]}"
        held = held_by_tp.get(tp, {})
        report.log_records += len(held)
        mine = stored.get(tp, {})
        missing = [o for o in sorted(held) if o not in mine]
        twice = [o for o in sorted(held) if len(mine.get(o, ())) > 1]
        differ = [o for o in sorted(held) if len(mine.get(o, ())) == 1 and mine[o][0] != held[o]]
        if missing:
            report.add(
                f"{name}: offsets {offset_ranges(missing)} ({len(missing)} record(s)) are in the log below the "
                f"auditor's committed offset {end} but not in the store: deleted"
            )
        if twice:
            report.add(f"{name}: offsets {offset_ranges(twice)} are in the store more than once")
        if differ:
            report.add(
                f"{name}: offsets {offset_ranges(differ)}: the stored record's raw_sha256 differs from the "
                "message the log holds: rewritten"
            )
        if held:
            last = max(held)
            covered = report.anchored.get(tp)
            if covered is None:
                report.add(
                    f"{name}: the log holds records up to offset {last} (committed {end}) but no signed anchor "
                    "outside the store covers this partition: the anchors are missing or signed with another key"
                )
            elif covered < last:
                report.add(
                    f"{name}: the newest signed anchor covers offset {covered} but the log ends at offset {last} "
                    f"(committed {end}): records {covered + 1}-{last} are not covered by a signature"
                )


async def verify_audit(
    store: AuditStore,
    public_key: Ed25519PublicKey,
    *,
    anchor_bus: Bus | None = None,
    anchor_file: Path | None = None,
    log: AuditedLog | None = None,
    group_id: str = topics.GROUP_AUDITOR,
    audited: Sequence[str] = (),
) -> tuple[VerifyReport, list[str]]:
    """Verify the store against anchors from outside it (the anchors topic on anchor_bus, anchor_file) and,
    given log, its completeness; the report and where the trusted anchors came from."""
    malformed: list[str] = []
    outside: list[Record] = []
    sources: list[str] = []
    if anchor_bus is not None:
        outside += await read_anchor_topic(anchor_bus, malformed)
        sources.append(f"topic {topics.AUDIT_ANCHORS}")
    if anchor_file is not None:
        sources.append(f"file {anchor_file}")
        if await asyncio.to_thread(anchor_file.is_file):
            outside += await asyncio.to_thread(read_anchor_file, anchor_file, malformed)
        else:
            malformed.append(f"anchor file {anchor_file} does not exist: deleted, or the wrong path")
    report = await verify_store(store, public_key, anchors=outside if sources else None)
    for problem in malformed:
        report.add(problem)
    if log is not None:
        await verify_against_log(store, log, group_id=group_id, audited=audited, report=report)
    return report, sources or ["the store itself (cut together with it: use --against-kafka or an anchor file)"]
