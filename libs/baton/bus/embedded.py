"""In-process bus with Kafka's semantics that matter: partitions by key, consumer groups, commit, redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from baton.bus.base import BatchHandler, BusRecord, Handler, Headers

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
_RETRY_DELAY_S = 1.0


def partition_for(key: bytes | None, partitions: int, counter: int) -> int:
    """Partition of a key (round-robin for keyless messages)."""
    if key is None:
        return counter % partitions
    return zlib.crc32(key) % partitions


@dataclass
class _Group:
    members: list[EmbeddedSubscription] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    generation: int = 0


class EmbeddedSubscription:
    """One member of a consumer group on the embedded bus."""

    def __init__(
        self,
        bus: EmbeddedBus,
        topics: Sequence[str],
        group_id: str | None,
        handler: Handler | None,
        batch_handler: BatchHandler | None = None,
        max_records: int = 500,
    ) -> None:
        self._bus = bus
        self._batch_handler = batch_handler
        self._max_records = max_records
        self.topics = tuple(topics)
        self.group_id = group_id
        self._handler = handler
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}
        self._generation = -1
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.wake = asyncio.Event()

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        return self._assigned

    def _assign(self, partitions: frozenset[TopicPartition], committed: dict[TopicPartition, int]) -> None:
        self._assigned = partitions
        self._positions = {tp: committed.get(tp, 0) for tp in partitions}

    def start(self) -> None:
        run = self._run_batches() if self._batch_handler is not None else self._run()
        self._task = asyncio.create_task(run, name=f"embedded-consumer-{self.group_id}")

    async def _run_batches(self) -> None:
        bus = self._bus
        assert self._batch_handler is not None
        while not self._closing:
            self.wake.clear()
            batch: list[BusRecord] = []
            ends: dict[TopicPartition, int] = {}
            for tp in sorted(self._assigned):
                log_ = bus.log_of(tp)
                pos = self._positions.get(tp, 0)
                take = log_[pos : pos + self._max_records - len(batch)]
                if take:
                    batch.extend(take)
                    ends[tp] = pos + len(take)
            if not batch:
                await self.wake.wait()
                continue
            generation = bus.generation_of(self.group_id)
            try:
                await self._batch_handler(batch)
            except Exception:
                log.exception("batch handler failed on %d records; re-delivering the batch", len(batch))
                await asyncio.sleep(_RETRY_DELAY_S)
                continue
            if bus.generation_of(self.group_id) == generation:
                for tp, end in ends.items():
                    if tp in self._assigned:
                        self._positions[tp] = end
                        bus.commit(self.group_id, tp, end)

    async def _run(self) -> None:
        bus = self._bus
        assert self._handler is not None
        while not self._closing:
            self.wake.clear()
            progressed = False
            for tp in sorted(self._assigned):
                log_ = bus.log_of(tp)
                pos = self._positions.get(tp, 0)
                if pos >= len(log_):
                    continue
                record = log_[pos]
                generation = bus.generation_of(self.group_id)
                try:
                    await self._handler(record)
                except Exception:
                    # As on Kafka: an outage, not a bad message; re-read this offset later.
                    log.exception("handler failed on %s@%d; retrying from this offset", tp, pos)
                    await asyncio.sleep(_RETRY_DELAY_S)
                    progressed = True
                    continue
                # A revoked partition's commit is refused, as Kafka's would be: the new owner re-reads it.
                if tp in self._assigned and bus.generation_of(self.group_id) == generation:
                    self._positions[tp] = pos + 1
                    bus.commit(self.group_id, tp, pos + 1)
                progressed = True
            if not progressed:
                await self.wake.wait()

    async def stop(self) -> None:
        self._closing = True
        self.wake.set()
        if self._task is not None:
            # Let the message in hand finish (and be committed) before leaving.
            done, _ = await asyncio.wait({self._task}, timeout=10)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._bus.leave(self)

    async def kill(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._bus.leave(self)


class EmbeddedBus:
    """The bus for `make demo` and component tests: one process, no broker."""

    def __init__(self, *, partitions: int = 4) -> None:
        self.default_partitions = partitions
        self._logs: dict[TopicPartition, list[BusRecord]] = {}
        self._partitions: dict[str, int] = {}
        self._groups: dict[str, _Group] = {}
        self._broadcast: list[EmbeddedSubscription] = []
        self._counter = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for group in list(self._groups.values()):
            for member in list(group.members):
                await member.stop()
        for sub in list(self._broadcast):
            await sub.stop()

    async def create_topics(self, topics: Sequence[str], *, partitions: int | None = None) -> None:
        for topic in topics:
            self._ensure(topic, partitions)

    def _ensure(self, topic: str, partitions: int | None = None) -> int:
        if topic not in self._partitions:
            self._partitions[topic] = partitions or self.default_partitions
            for p in range(self._partitions[topic]):
                self._logs[(topic, p)] = []
        return self._partitions[topic]

    def size(self, topics: Sequence[str]) -> int:
        """How many records the topics hold."""
        return sum(len(records) for (topic, _p), records in self._logs.items() if topic in topics)

    def log_of(self, tp: TopicPartition) -> list[BusRecord]:
        return self._logs.get(tp, [])

    def generation_of(self, group_id: str | None) -> int:
        return self._groups[group_id].generation if group_id in self._groups else 0

    def commit(self, group_id: str | None, tp: TopicPartition, offset: int) -> None:
        if group_id is not None:
            self._groups[group_id].committed[tp] = offset

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        partitions = self._ensure(topic)
        self._counter += 1
        p = partition_for(key, partitions, self._counter)
        log_ = self._logs[(topic, p)]
        log_.append(BusRecord(topic, p, len(log_), key, value, tuple(headers)))
        self._wake_all()

    def _wake_all(self) -> None:
        for group in self._groups.values():
            for member in group.members:
                member.wake.set()
        for sub in self._broadcast:
            sub.wake.set()

    async def replay(self, topics: Sequence[str], handler: Handler) -> int:
        count = 0
        for (topic, _p), records in sorted(self._logs.items()):
            if topic in topics:
                for record in list(records):
                    await handler(record)
                    count += 1
        return count

    async def subscribe_batches(
        self, topics: Sequence[str], *, group_id: str, handler: BatchHandler, max_records: int = 500
    ) -> EmbeddedSubscription:
        return self._join(EmbeddedSubscription(self, topics, group_id, None, handler, max_records))

    async def subscribe(self, topics: Sequence[str], *, group_id: str | None, handler: Handler) -> EmbeddedSubscription:
        return self._join(EmbeddedSubscription(self, topics, group_id, handler))

    def _join(self, sub: EmbeddedSubscription) -> EmbeddedSubscription:
        group_id = sub.group_id
        for topic in sub.topics:
            self._ensure(topic)
        if group_id is None:
            sub._assign(frozenset(tp for tp in self._logs if tp[0] in sub.topics), {})
            self._broadcast.append(sub)
        else:
            group = self._groups.setdefault(group_id, _Group())
            group.members.append(sub)
            self._rebalance(group)
        sub.start()
        return sub

    def _rebalance(self, group: _Group) -> None:
        group.generation += 1
        members = group.members
        topics = sorted({t for m in members for t in m.topics})
        share: dict[int, set[TopicPartition]] = {i: set() for i in range(len(members))}
        for topic in topics:
            interested = [i for i, m in enumerate(members) if topic in m.topics]
            for p in range(self._partitions[topic]):
                share[interested[p % len(interested)]].add((topic, p))
        for i, member in enumerate(members):
            member._assign(frozenset(share[i]), group.committed)
            member.wake.set()

    async def leave(self, sub: EmbeddedSubscription) -> None:
        if sub.group_id is None:
            if sub in self._broadcast:
                self._broadcast.remove(sub)
            return
        group = self._groups.get(sub.group_id)
        if group is not None and sub in group.members:
            group.members.remove(sub)
            sub._assign(frozenset(), {})
            self._rebalance(group)
        self._wake_all()
