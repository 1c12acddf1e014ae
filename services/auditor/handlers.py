"""Auditor handler: decode a batch, skip what is stored, chain the rest, append, then (bus) commit."""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime

from baton.audit.chain import AuditChain, Head, Record, describe, duplicate_event_id, record_id, sign
from baton.audit.store import AuditStore
from baton.bus.base import BusRecord
from baton.contracts.serde import AvroSerde, DecodeError

log = logging.getLogger(__name__)

# Event ids remembered to recognise redeliveries without asking the store, and workflow heads kept
# in memory; a duplicate older than the window is still caught by the store's unique index, and a
# workflow whose head was evicted has it read back from the store. Sized so memory is flat past
# ~10,000 workflows (make soak).
_RECENT_IDS = 20_000
_CACHED_WORKFLOWS = 10_000


class AuditorHandlers:
    """Appends every consumed message exactly once, in both chains, and writes signed anchors."""

    def __init__(self, store: AuditStore, serde: AvroSerde, *, key: bytes, anchor_every: int, auditor_id: str) -> None:
        self._store = store
        self._serde = serde
        self._chain = AuditChain(key)
        self._key = key
        self._anchor_every = anchor_every
        self._auditor_id = auditor_id
        self._since_anchor = 0
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._careful = True  # after a start or a failure: ask the store which event ids it has
        self.appended = 0
        self.skipped = 0

    async def on_batch(self, records: Sequence[BusRecord]) -> None:
        try:
            await self._append(records)
        except Exception:
            # Part of the batch may be stored; forget the heads so the retry re-reads them from the store.
            self._chain.partitions.clear()
            self._chain.workflows.clear()
            self._careful = True
            raise

    async def _append(self, records: Sequence[BusRecord]) -> None:
        contents: list[Record] = []
        by_partition: dict[tuple[str, int], list[int]] = {}
        for r in records:
            by_partition.setdefault((r.topic, r.partition), []).append(r.offset)
        for tp, offsets in by_partition.items():
            if tp not in self._chain.partitions:
                head = await self._restore_head(tp, offsets)
                if head is not None:
                    self._chain.partitions[tp] = head
        for record in records:
            tp = (record.topic, record.partition)
            head = self._chain.partitions.get(tp)
            if head is not None and record.offset <= head.position:
                self.skipped += 1  # redelivered after a restart: already in the log
                continue
            contents.append(await self._describe(record))
        if not contents:
            return
        ids = [c["event_id"] for c in contents]
        stored = {i for i in ids if i in self._recent}
        if self._careful:
            stored |= await self._store.existing_event_ids(ids)
        new_workflows = sorted({c["workflow_id"] for c in contents} - set(self._chain.workflows))
        self._chain.workflows.update(await self._store.workflow_heads(new_workflows))
        batch: list[Record] = []
        final_ids = await self._final_ids(contents, stored)
        for content, (event_id, duplicate_of) in zip(contents, final_ids, strict=True):
            linked = self._chain.link(content | {"event_id": event_id}, duplicate_of=duplicate_of)
            linked["_id"] = record_id(content["topic"], content["partition"], content["offset"])
            batch.append(linked)
        await self._store.append(batch)
        self._careful = False
        for eid in [*ids, *(event_id for event_id, _ in final_ids)]:
            self._recent[eid] = None
        while len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        while len(self._chain.workflows) > _CACHED_WORKFLOWS:
            self._chain.workflows.pop(next(iter(self._chain.workflows)))
        self.appended += len(batch)
        self._since_anchor += len(batch)
        if self._since_anchor >= self._anchor_every:
            await self.anchor()

    async def _describe(self, record: BusRecord) -> Record:
        """One message's audit content. Nothing about the message fails the batch: what cannot be
        decoded or described is recorded as undecodable; only an outage (the registry) raises."""
        try:
            event = await self._serde.decode(record.value)
        except DecodeError as exc:
            if exc.transient:
                raise
            return describe(record, None, f"{exc.code}: {exc}")
        except Exception as exc:
            log.warning("%s@%d/%d does not decode: %r", record.topic, record.partition, record.offset, exc)
            return describe(record, None, f"DECODE_FAILED: {type(exc).__name__}: {exc}")
        return describe(record, event, None)

    async def _final_ids(self, contents: Sequence[Record], stored: set[str]) -> list[tuple[str, str | None]]:
        """Each record's event id in the store, and the id it repeats when it is a redelivered event."""
        taken = set(stored)
        out: list[tuple[str, str | None]] = []
        for content in contents:
            eid: str = content["event_id"]
            final, duplicate_of = eid, None
            if eid in taken:
                duplicate_of = eid
                position = record_id(content["topic"], content["partition"], content["offset"])
                attempt = 0
                final = duplicate_event_id(eid, position)
                # Only an event that chose such an id can take it; after a failure the store is asked too.
                while (
                    final in taken
                    or final in self._recent
                    or (self._careful and await self._store.existing_event_ids([final]))
                ):
                    attempt += 1
                    final = duplicate_event_id(eid, position, attempt)
            taken.add(final)
            out.append((final, duplicate_of))
        return out

    async def _restore_head(self, tp: tuple[str, int], offsets: list[int]) -> Head | None:
        """The partition's chain head, found with point look-ups around what Kafka redelivered.

        Offsets are committed only after a batch is stored, so what is stored of a redelivered
        batch is a prefix of each partition's records in it (inserts are ordered): binary-search it.
        """
        lo, hi = 0, len(offsets)
        while lo < hi:
            mid = (lo + hi) // 2
            if await self._store.head_at(record_id(tp[0], tp[1], offsets[mid])) is not None:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(offsets):
            return await self._gallop(tp, offsets[-1])
        if lo > 0:
            return await self._store.head_at(record_id(tp[0], tp[1], offsets[lo - 1]))
        if offsets[0] == 0:
            return None
        before = await self._store.head_at(record_id(tp[0], tp[1], offsets[0] - 1))
        if before is not None:
            return before
        return await self._store.last_of_partition(*tp)  # a gap in the source offsets: ask the slow way

    async def _gallop(self, tp: tuple[str, int], stored: int) -> Head | None:
        """The last stored offset at or after one known to be stored (replays from before the commit)."""

        async def exists(offset: int) -> bool:
            return await self._store.head_at(record_id(tp[0], tp[1], offset)) is not None

        step = 1
        while await exists(stored + step):
            stored += step
            step *= 2
        lo, hi = stored + 1, stored + step
        while lo < hi:
            mid = (lo + hi) // 2
            if await exists(mid):
                lo = mid + 1
            else:
                hi = mid
        return await self._store.head_at(record_id(tp[0], tp[1], lo - 1))

    async def anchor(self) -> None:
        """Write a signed checkpoint of the chain heads, so cutting the log's tail is detectable."""
        if not self._chain.partitions:
            return
        anchor: Record = {
            "anchor_id": str(uuid.uuid4()),
            "auditor": self._auditor_id,
            "created_at": datetime.now(UTC).isoformat(),
            "records_appended": self.appended,
            "heads": [
                {"topic": topic, "partition": partition, "offset": head.position, "hash": head.hash}
                for (topic, partition), head in sorted(self._chain.partitions.items())
            ],
        }
        anchor["signature"] = sign(self._key, anchor)
        await self._store.write_anchor(anchor)
        self._since_anchor = 0
