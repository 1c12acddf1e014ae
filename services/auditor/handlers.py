"""Auditor handler: decode a batch, skip what is stored, chain the rest, append, then (bus) commit."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.trace import SpanKind, Tracer

from baton import topics
from baton.audit.anchors import AnchorSink, make_anchors
from baton.audit.chain import AuditChain, Head, Record, describe_plain, duplicate_event_id, record_id
from baton.audit.heads import MaybeStored
from baton.audit.store import AuditStore
from baton.bus.base import BusRecord
from baton.contracts.models import Event
from baton.contracts.serde import AvroSerde, DecodeError
from baton.identity import SIGNATURE_HEADER, SIGNER_HEADER, AuthenticationError, Keyring, signed_message
from baton.messaging import unauthorized
from baton.telemetry import metrics, tracing

log = logging.getLogger(__name__)

# Event ids remembered to recognise redeliveries without asking the store, and workflow heads kept
# in memory (least recently linked evicted first); a duplicate older than the window is still caught
# by the store's unique index, and a workflow whose head was evicted has it read back from the store
# once (MaybeStored). Sized so memory is flat past ~10,000 workflows (make soak).
_RECENT_IDS = 20_000
_CACHED_WORKFLOWS = 10_000
# Records linked per store write: a batch is written in chunks so the next chunk's CPU work overlaps the
# previous chunk's store round trip.
_CHUNK = 500
_YIELD_EVERY = 50


EndOffsets = Callable[[str], Awaitable[dict[int, int]]]


def _in_time_order(contents: list[tuple[Record, bytes | None]]) -> list[tuple[Record, bytes | None]]:
    """A batch's records merged across partitions by event time, each partition's kept in offset order.

    A workflow's chain is the order the auditor links its records in; a large batch holds several
    topics' records, and linking them partition after partition would put a step before its task.
    """
    by_partition: dict[tuple[str, int], list[tuple[Record, bytes | None]]] = {}
    for pair in contents:
        by_partition.setdefault((pair[0]["topic"], pair[0]["partition"]), []).append(pair)
    if len(by_partition) < 2:
        return contents
    return list(heapq.merge(*by_partition.values(), key=lambda pair: pair[0]["occurred_at"] or ""))


# The records whose audit is a span of their workflow's trace (see AuditorHandlers._trace).
_TRACED = frozenset({topics.OUTCOMES, topics.DEAD_LETTER})


class AuditorHandlers:
    """Appends every consumed message exactly once, in both chains, and publishes signed anchors."""

    def __init__(
        self,
        store: AuditStore,
        serde: AvroSerde,
        *,
        signing_key: Ed25519PrivateKey,
        anchor_every: int,
        auditor_id: str,
        sinks: Sequence[AnchorSink] = (),
        end_offsets: EndOffsets | None = None,
        keyring: Keyring | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer
        self._store = store
        self._keyring = keyring
        self._serde = serde
        self._chain = AuditChain()
        self._signing_key = signing_key
        self.public_key = signing_key.public_key()
        self._sinks = list(sinks)
        self._end_offsets = end_offsets
        self._anchor_every = anchor_every
        self._auditor_id = auditor_id
        self._since_anchor = 0
        # Partitions whose head moved since the last anchor, and since when records wait for one.
        self._unanchored: set[tuple[str, int]] = set()
        self._unanchored_since: float | None = None
        self._last_append = time.monotonic()
        self._lock = asyncio.Lock()  # a batch and an anchor never interleave: anchors sign stored heads only
        self.anchors_published = 0
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._careful = True  # after a start or a failure: ask the store which event ids it has
        # Workflows that may have stored records but no head here: only those are looked up. Complete
        # once the heads were restored: for every partition (no on_assign came: a standalone handler)
        # or for the assigned ones (on_assign); a workflow outside both is new.
        self._maybe_stored = MaybeStored()
        self._restore_needed = True
        self._restore_scope: set[tuple[str, int]] | None = None  # None: every partition
        self.workflow_lookups = 0  # workflows whose head was read back from the store, one look-up each
        self.appended = 0
        self.skipped = 0

    async def on_batch(self, records: Sequence[BusRecord]) -> None:
        started_ns = time.time_ns()
        async with self._lock:
            try:
                if self._restore_needed:
                    await self._restore_workflows()
                await self._append(records)
                for topic, count in Counter(r.topic for r in records).items():
                    metrics.EVENTS_PROCESSED.labels(topic, topics.GROUP_AUDITOR).inc(count)
                if self._tracer is not None and tracing.enabled():
                    self._trace(records, started_ns)
            except Exception:
                # Part of the batch may be stored; forget the heads so the retry re-reads them from the store,
                # and the ids taken in memory, some of which were never stored: ask the store instead.
                self._chain.partitions.clear()
                self._forget_workflows()
                self._recent.clear()
                self._careful = True
                raise
            if self._since_anchor >= self._anchor_every:
                await self._anchor_logged()

    def _trace(self, records: Sequence[BusRecord], started_ns: int) -> None:
        """A `process {topic}` span for each workflow outcome and dead letter stored, in its trace (the batch's
        timing): the audit of a workflow's end shows in its trace, while the audit of every record, which
        would double what every service records, is counted in the metrics instead."""
        assert self._tracer is not None
        stored_ns = time.time_ns()
        for record in records:
            if record.topic not in _TRACED:
                continue
            parent = tracing.extract(record.headers)
            if tracing.sampled_out(parent):
                continue
            span = self._tracer.start_span(
                f"process {record.topic}",
                context=parent,
                kind=SpanKind.CONSUMER,
                start_time=started_ns,
                attributes={
                    tracing.MESSAGING_SYSTEM: "kafka",
                    tracing.MESSAGING_OPERATION_TYPE: "process",
                    tracing.MESSAGING_OPERATION_NAME: "process",
                    tracing.MESSAGING_DESTINATION: record.topic,
                    tracing.MESSAGING_PARTITION: str(record.partition),
                    tracing.MESSAGING_GROUP: topics.GROUP_AUDITOR,
                    tracing.MESSAGING_OFFSET: record.offset,
                    tracing.MESSAGING_KEY: record.key.decode(errors="replace") if record.key else "",
                    "baton.audit.batch_size": len(records),
                },
            )
            span.end(stored_ns)

    async def on_assign(self, partitions: frozenset[tuple[str, int]]) -> None:
        """Adopt the stored head of each assigned partition the store holds to its end, and anchor it soon.

        After a crash the tail between the last anchor and the committed offset has no anchor; when no
        new record arrives on that partition nothing else would ever sign it. One point look-up each.
        """
        async with self._lock:
            # The heads of the workflows of these partitions: from now on, a workflow neither held nor
            # restored nor looked up is new. On failure the first batch restores them (or is retried).
            self._restore_scope = (self._restore_scope or set()) | set(partitions)
            self._restore_needed = True
            self._careful = True  # another member may have stored event ids this one never saw
            try:
                await self._restore_workflows()
            except Exception as exc:
                log.warning("restoring the workflow heads of %d assigned partitions failed: %r", len(partitions), exc)
            if self._end_offsets is None:
                return
            try:
                await self._adopt(partitions, self._end_offsets)
            except Exception as exc:  # only anchoring waits for it: the next record restores the head anyway
                log.warning("adopting the stored heads of %d assigned partitions failed: %r", len(partitions), exc)

    async def _adopt(self, partitions: frozenset[tuple[str, int]], end_offsets: EndOffsets) -> None:
        for topic in sorted({t for t, _ in partitions}):
            ends = await end_offsets(topic)
            for t, p in sorted(tp for tp in partitions if tp[0] == topic):
                end = ends.get(p, 0)
                if (t, p) in self._chain.partitions or end == 0:
                    continue
                head = await self._store.head_at(record_id(t, p, end - 1))
                if head is not None:
                    self._chain.partitions[(t, p)] = head
                    self._mark_unanchored((t, p))

    async def on_revoke(self, partitions: frozenset[tuple[str, int]]) -> None:
        """Anchor what is stored of the partitions let go, then forget their heads: another member
        appends to them now, and a head kept here would be stale if they came back."""
        async with self._lock:
            await self._anchor_logged()
            # Workflows are keyed by partition, so the chains of the partitions let go are another member's
            # now; which cached head is whose is not tracked: forget them all, each is read back once.
            self._forget_workflows()
            if self._restore_scope is not None:
                self._restore_scope -= set(partitions)
            for tp in partitions:
                self._chain.partitions.pop(tp, None)
                self._unanchored.discard(tp)
            if not self._unanchored:
                self._unanchored_since = None

    def _forget_workflows(self) -> None:
        """Drop every cached workflow head, remembering that those workflows have records stored."""
        for workflow_id in self._chain.workflows:
            self._maybe_stored.add(workflow_id)
        self._chain.workflows.clear()

    def _evict_workflows(self) -> None:
        while len(self._chain.workflows) > _CACHED_WORKFLOWS:
            oldest = next(iter(self._chain.workflows))
            del self._chain.workflows[oldest]
            self._maybe_stored.add(oldest)

    async def _restore_workflows(self) -> None:
        """One pass over the store's workflow chains: remember every stored workflow, and hold the head of
        each that has a record in the restore scope (capped: the rest is read back on demand)."""
        scope = self._restore_scope
        current: str | None = None
        head: Head | None = None
        in_scope = False

        def adopt() -> None:
            if current is None or head is None:
                return
            self._maybe_stored.add(current)
            if in_scope:
                self._chain.workflows.pop(current, None)
                self._chain.workflows[current] = head
                self._evict_workflows()

        async for rows in self._store.chain_links():
            for workflow_id, seq, hash_, topic, partition in rows:
                if workflow_id != current:
                    adopt()
                    current, in_scope = workflow_id, False
                head = Head(seq, hash_)
                in_scope = in_scope or scope is None or (topic, partition) in scope
        adopt()
        self._restore_needed = False

    def _mark_unanchored(self, tp: tuple[str, int]) -> None:
        self._unanchored.add(tp)
        if self._unanchored_since is None:
            self._unanchored_since = time.monotonic()

    async def _append(self, records: Sequence[BusRecord]) -> None:
        """Chain and store a batch in chunks, in order: a chunk is described and linked (CPU) while the one
        before it is being written (store I/O), and the batch returns only once every chunk is stored."""
        writing: tuple[asyncio.Task[None], list[Record]] | None = None
        try:
            for i in range(0, len(records), _CHUNK):
                batch = await self._link_chunk(records[i : i + _CHUNK])
                if writing is not None:
                    await writing[0]
                    self._stored(writing[1])
                    writing = None
                if batch:
                    writing = (asyncio.ensure_future(self._store.append(batch)), batch)
            if writing is not None:
                await writing[0]
                self._stored(writing[1])
                writing = None
        finally:
            if writing is not None:  # failing: never leave a write running behind the retry
                await asyncio.gather(writing[0], return_exceptions=True)

    async def _link_chunk(self, records: Sequence[BusRecord]) -> list[Record]:
        """Describe and link the records not stored yet; heads and recent ids move on (reset on failure)."""
        described: list[tuple[Record, bytes | None]] = []
        by_partition: dict[tuple[str, int], list[int]] = {}
        for r in records:
            by_partition.setdefault((r.topic, r.partition), []).append(r.offset)
        for tp, offsets in by_partition.items():
            if tp not in self._chain.partitions:
                head = await self._restore_head(tp, offsets)
                if head is not None:
                    self._chain.partitions[tp] = head
        for n, record in enumerate(records, start=1):
            tp = (record.topic, record.partition)
            head = self._chain.partitions.get(tp)
            if head is not None and record.offset <= head.position:
                self.skipped += 1  # redelivered after a restart: already in the log
                continue
            described.append(await self._describe(record))
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # describing is CPU: let the process's other consumers (the kill switch) in
        if not described:
            return []
        described = _in_time_order(described)
        contents = [content for content, _ in described]
        ids = [c["event_id"] for c in contents]
        stored = {i for i in ids if i in self._recent}
        if self._careful:
            stored |= await self._store.existing_event_ids(ids)
        unknown = {c["workflow_id"] for c in contents} - self._chain.workflows.keys()
        stored_before = sorted(w for w in unknown if w in self._maybe_stored)
        if stored_before:
            self.workflow_lookups += len(stored_before)
            self._chain.workflows.update(await self._store.workflow_heads(stored_before))
        batch: list[Record] = []
        final_ids = await self._final_ids(contents, stored)
        for (content, payload), (event_id, duplicate_of) in zip(described, final_ids, strict=True):
            linked = self._chain.link(content | {"event_id": event_id}, duplicate_of=duplicate_of, payload=payload)
            linked["_id"] = record_id(content["topic"], content["partition"], content["offset"])
            batch.append(linked)
        # The next chunk must see these ids as taken before this one is acknowledged; a failure clears them.
        for eid in [*ids, *(event_id for event_id, _ in final_ids)]:
            self._recent[eid] = None
        while len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        return batch

    def _stored(self, batch: list[Record]) -> None:
        """Account for a chunk the store acknowledged."""
        self._careful = False
        self._evict_workflows()
        self.appended += len(batch)
        self._since_anchor += len(batch)
        self._last_append = time.monotonic()
        for linked in batch:
            self._mark_unanchored((linked["topic"], linked["partition"]))

    async def _describe(self, record: BusRecord) -> tuple[Record, bytes | None]:
        """One message's audit content, with who signed it. Nothing about the message fails the batch:
        what cannot be decoded or described is recorded as undecodable; only an outage (the registry) raises."""
        try:
            event: Event | None = await self._serde.decode(record.value)
            error = None
        except DecodeError as exc:
            if exc.transient:
                raise
            event, error = None, f"{exc.code}: {exc}"
        except Exception as exc:
            log.warning("%s@%d/%d does not decode: %r", record.topic, record.partition, record.offset, exc)
            event, error = None, f"DECODE_FAILED: {type(exc).__name__}: {exc}"
        content, payload = describe_plain(record, event, error)
        if self._keyring is not None:
            content["signer"] = self._signer(record, event)
        return content, payload

    def _signer(self, record: BusRecord, event: Event | None) -> str:
        """The role that signed the message; or why its signature proves nobody (UNAUTHENTICATED:<code>), or
        that the producer matrix gives its signer no right to it (NOT_AUTHORIZED:<role>). Recorded, never
        refused: the audit keeps everything that was on the bus, forgeries included, marked as such."""
        assert self._keyring is not None
        message = signed_message(record.topic, record.key, record.value)
        try:
            role = self._keyring.verify(record.header(SIGNER_HEADER), record.header(SIGNATURE_HEADER), message)
        except AuthenticationError as exc:
            return f"UNAUTHENTICATED:{exc.code}"
        if event is not None and unauthorized(event, record.topic, role) is not None:
            return f"NOT_AUTHORIZED:{role}"
        return role

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
        """Sign the heads of the partitions that moved since the last anchor and publish them to every sink."""
        async with self._lock:
            await self._anchor()

    async def anchor_when_due(self, *, idle_s: float, max_age_s: float) -> None:
        """Run forever: anchor once no batch came for idle_s (the tail after the last batch), or once a
        stored record has waited max_age_s (a steady trickle never idles and never reaches anchor_every)."""
        while True:
            await asyncio.sleep(min(idle_s, max_age_s) / 4)
            since = self._unanchored_since
            now = time.monotonic()
            if since is not None and (now - self._last_append >= idle_s or now - since >= max_age_s):
                async with self._lock:
                    await self._anchor_logged()

    async def _anchor_logged(self) -> None:
        # A sink outage must not stop the audit: the records are stored and the next anchor retries.
        try:
            await self._anchor()
        except Exception as exc:
            log.warning("publishing audit anchors failed (%r); retrying with the next anchor", exc)

    async def _anchor(self) -> None:
        heads = {tp: self._chain.partitions[tp] for tp in self._unanchored if tp in self._chain.partitions}
        if not heads:
            return
        anchors = make_anchors(
            heads, key=self._signing_key, auditor_id=self._auditor_id, records_appended=self.appended
        )
        for sink in self._sinks:
            await sink.publish(anchors)
        self.anchors_published += len(anchors)
        # A partition whose head was forgotten after a failure stays pending until the retry restores it.
        self._unanchored -= set(heads)
        self._unanchored_since = self._unanchored_since if self._unanchored else None
        self._since_anchor = 0
