"""Auditor handler: decode a batch, skip what is stored, chain the rest, append, then (bus) commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from baton.audit.chain import AuditChain, Record, describe, record_id, sign
from baton.audit.store import AuditStore
from baton.bus.base import BusRecord
from baton.contracts.models import Event
from baton.contracts.serde import AvroSerde, DecodeError

log = logging.getLogger(__name__)


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
        self.appended = 0
        self.skipped = 0

    async def on_batch(self, records: Sequence[BusRecord]) -> None:
        try:
            await self._append(records)
        except Exception:
            # Part of the batch may be stored; forget the heads so the retry re-reads them from the store.
            self._chain.partitions.clear()
            self._chain.workflows.clear()
            raise

    async def _append(self, records: Sequence[BusRecord]) -> None:
        fresh: list[tuple[BusRecord, Event | None, str | None]] = []
        for record in records:
            tp = (record.topic, record.partition)
            if tp not in self._chain.partitions:
                head = await self._store.partition_head(*tp)
                if head is not None:
                    self._chain.partitions[tp] = head
            head = self._chain.partitions.get(tp)
            if head is not None and record.offset <= head.position:
                self.skipped += 1  # redelivered after a restart: already in the log
                continue
            try:
                event: Event | None = await self._serde.decode(record.value)
                error = None
            except DecodeError as exc:
                if exc.transient:
                    raise
                event, error = None, f"{exc.code}: {exc}"
            fresh.append((record, event, error))
        if not fresh:
            return
        contents = [describe(r, e, err) for r, e, err in fresh]
        stored = await self._store.existing_event_ids([c["event_id"] for c in contents])
        for wf in {c["workflow_id"] for c in contents} - set(self._chain.workflows):
            head = await self._store.workflow_head(wf)
            if head is not None:
                self._chain.workflows[wf] = head
        batch: list[Record] = []
        in_batch: set[str] = set()
        for content in contents:
            eid = content["event_id"]
            duplicate = eid in stored or eid in in_batch
            in_batch.add(eid)
            linked = self._chain.link(content, duplicate_of=eid if duplicate else None)
            linked["_id"] = record_id(content["topic"], content["partition"], content["offset"])
            batch.append(linked)
        await self._store.append(batch)
        self.appended += len(batch)
        self._since_anchor += len(batch)
        if self._since_anchor >= self._anchor_every:
            await self.anchor()

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
