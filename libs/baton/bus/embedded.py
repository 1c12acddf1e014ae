"""In-process bus with Kafka's semantics that matter: partitions by key, consumer groups, commit, redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from baton.bus.base import (
    DEFAULT_RETRY_BACKOFF,
    Backoff,
    BatchHandler,
    BusRecord,
    Handler,
    Headers,
    KeyLanes,
    LoopHealth,
    PartitionsCallback,
    TopicPartition,
    check_message_size,
)

log = logging.getLogger(__name__)

# An idle member still wakes this often, so its last_poll shows it is alive.
_IDLE_WAIT_S = 1.0


def partition_for(key: bytes | None, partitions: int, counter: int) -> int:
    """Partition of a key (round-robin for keyless messages)."""
    if key is None:
        return counter % partitions
    return zlib.crc32(key) % partitions


@dataclass
class _Group:
    members: list[EmbeddedSubscription] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    # Who holds each partition: a member takes one over only once the previous holder let go of it
    # (finished its record in hand and ran on_revoke), as Kafka's rebalance barrier guarantees.
    holders: dict[TopicPartition, EmbeddedSubscription] = field(default_factory=dict)


class EmbeddedSubscription:
    """One member of a consumer group on the embedded bus.

    The group's assignment changes synchronously (_rebalance); the member's loop notices it between
    two records, runs on_revoke for what it lost and on_assign for what it gained, then reads on.
    """

    def __init__(
        self,
        bus: EmbeddedBus,
        topics: Sequence[str],
        group_id: str | None,
        *,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        max_records: int = 500,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        retry_backoff: tuple[float, float] = DEFAULT_RETRY_BACKOFF,
        by_key: bool = True,
    ) -> None:
        self._bus = bus
        # A broadcast reader's first position per partition (from_end: the log's end when it subscribed).
        self.start_at: dict[TopicPartition, int] = {}
        self.topics = tuple(topics)
        self.group_id = group_id
        self._handler = handler
        self._lanes = KeyLanes(handler, log, by_key=by_key) if handler is not None else None
        self._batch_handler = batch_handler
        self._max_records = max_records
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._retry_backoff = retry_backoff
        self._assigned: frozenset[TopicPartition] = frozenset()  # what the group gives this member
        self._owned: set[TopicPartition] = set()  # taken over (on_assign done) and not yet let go
        self._positions: dict[TopicPartition, int] = {}
        self._health = LoopHealth()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stopping = asyncio.Event()
        self.wake = asyncio.Event()

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        return self._assigned

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done() and self._health.failures == 0

    @property
    def last_poll(self) -> float:
        return self._health.last_poll

    def lag(self) -> dict[tuple[str, int], int]:
        lags: dict[tuple[str, int], int] = {}
        for tp in list(self._owned):
            position = self._bus.committed(self.group_id, tp) if self.group_id is not None else self._positions.get(tp)
            if position is not None:
                lags[tp] = max(0, len(self._bus.log_of(tp)) - position)
        return lags

    def _assign(self, partitions: frozenset[TopicPartition]) -> None:
        self._assigned = partitions
        self.wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"embedded-consumer-{self.group_id}")

    async def _supervise(self) -> None:
        """Run the loop until stop or kill; a failure outside the handler is logged and the loop resumes."""
        step = self._step_batch if self._batch_handler is not None else self._step
        handler_backoff = Backoff(*self._retry_backoff)
        loop_backoff = Backoff(*self._retry_backoff)
        while not self._closing:
            self.wake.clear()
            try:
                await self._follow_assignment()
                read, failed = await step()
            except Exception:
                self._health.failed()
                delay = loop_backoff.failed()
                log.exception(
                    "consumer of %s (group %s) failed outside its handler; resuming from the committed "
                    "offsets in %.2fs",
                    ",".join(self.topics),
                    self.group_id,
                    delay,
                )
                self._rewind()
                await self._rest(delay)
                continue
            self._health.polled()
            loop_backoff.succeeded()
            if failed:
                await self._rest(handler_backoff.failed())
            elif read:
                handler_backoff.succeeded()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), _IDLE_WAIT_S)

    async def _rest(self, delay: float) -> None:
        """Wait before retrying; stop() cuts it short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _follow_assignment(self) -> None:
        """Let go of partitions the group took away, take over the ones it gave (once their holder let go)."""
        gone = self._owned - self._assigned
        if gone:
            await self._let_go(gone)
        new = {tp for tp in self._assigned - self._owned if self._bus.holder_of(self.group_id, tp) is None}
        if not new:
            return
        # Held from now on, so no other member takes them over while on_assign runs.
        self._bus.hold(self.group_id, new, self)
        try:
            if self._on_assign is not None:
                await self._on_assign(frozenset(new))
        except BaseException:
            self._bus.release(self.group_id, new, self)
            raise
        for tp in new:
            self._positions[tp] = (
                self._bus.committed(self.group_id, tp) if self.group_id is not None else self.start_at.get(tp, 0)
            )
        self._owned |= new

    async def _let_go(self, partitions: set[TopicPartition]) -> None:
        """on_revoke, then release the partitions to the member the group gave them to."""
        self._owned -= partitions
        try:
            if self._on_revoke is not None:
                await self._on_revoke(frozenset(partitions))
        except Exception:
            # The partitions go regardless: holding them back would stall the whole group.
            log.exception(
                "on_revoke failed for %s (group %s); the partitions move on", sorted(partitions), self.group_id
            )
        finally:
            for tp in partitions:
                self._positions.pop(tp, None)
            if self._lanes is not None:
                self._lanes.forget(partitions)
            self._bus.release(self.group_id, partitions, self)

    def _readable(self) -> list[TopicPartition]:
        """Owned partitions still assigned; none while a revocation is pending, so it happens between records."""
        if self._owned - self._assigned:
            return []
        return sorted(self._owned)

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        self._bus.commit(self.group_id, tp, offset)
        self._positions[tp] = offset

    def _rewind(self) -> None:
        """Back to the committed offsets, so nothing read but not committed is skipped."""
        if self.group_id is not None:
            for tp in self._owned:
                self._positions[tp] = self._bus.committed(self.group_id, tp)

    def _take(self) -> tuple[list[BusRecord], dict[TopicPartition, int]]:
        """Up to max_records unread records, shared out across the readable partitions; and where each ends."""
        readable = self._readable()
        batch: list[BusRecord] = []
        ends: dict[TopicPartition, int] = {}
        share = max(1, -(-self._max_records // max(1, len(readable))))
        for tp in readable:
            pos = self._positions[tp]
            take = self._bus.log_of(tp)[pos : pos + min(share, self._max_records - len(batch))]
            if take:
                batch.extend(take)
                ends[tp] = pos + len(take)
        return batch, ends

    async def _step(self) -> tuple[bool, bool]:
        """One poll: records of one key in order, different keys concurrently; returns (read anything, a
        handler failed)."""
        assert self._lanes is not None
        batch, _ends = self._take()
        if not batch:
            return False, False
        handled = await self._lanes.handle(batch, stopping=lambda: self._closing or bool(self._owned - self._assigned))
        for tp, offset in handled.commit.items():
            self._commit(tp, offset)
        return True, handled.failed

    async def _step_batch(self) -> tuple[bool, bool]:
        """Up to max_records across readable partitions, handed over at once; committed after the handler."""
        assert self._batch_handler is not None
        batch, ends = self._take()
        if not batch:
            return False, False
        try:
            await self._batch_handler(batch)
        except Exception:
            log.exception("batch handler failed on %d records; re-delivering the batch", len(batch))
            return True, True
        for tp, end in ends.items():
            self._commit(tp, end)
        return True, False

    async def stop(self) -> None:
        self._closing = True
        self._stopping.set()
        self.wake.set()
        if self._task is not None:
            # Let the message in hand finish (and be committed) before leaving.
            done, _ = await asyncio.wait({self._task}, timeout=10)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._owned:
            await self._let_go(set(self._owned))
        await self._bus.leave(self)

    async def kill(self) -> None:
        self._closing = True
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A crash runs no on_revoke; the group just stops waiting for this member.
        self._bus.release(self.group_id, set(self._owned), self)
        self._owned.clear()
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

    async def create_topics(
        self, topics: Sequence[str], *, partitions: int | None = None, compacted: bool = False
    ) -> None:
        # compacted is accepted and ignored: this bus never deletes a record, so every reader of a
        # compacted topic (which must cope with seeing older records of a key) is served correctly.
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
        """The records of one partition, in offset order."""
        return self._logs.get(tp, [])

    def committed(self, group_id: str, tp: TopicPartition) -> int:
        """The group's committed offset of a partition (0 when it committed none)."""
        group = self._groups.get(group_id)
        return group.committed.get(tp, 0) if group is not None else 0

    def commit(self, group_id: str | None, tp: TopicPartition, offset: int) -> None:
        """Record a group's progress on a partition (nothing for a group-less reader)."""
        if group_id is not None:
            self._groups[group_id].committed[tp] = offset

    def holder_of(self, group_id: str | None, tp: TopicPartition) -> EmbeddedSubscription | None:
        """The member currently holding a partition of a group (None for a group-less reader)."""
        group = self._groups.get(group_id) if group_id is not None else None
        return group.holders.get(tp) if group is not None else None

    def hold(self, group_id: str | None, partitions: Collection[TopicPartition], sub: EmbeddedSubscription) -> None:
        """Mark partitions as held by sub."""
        group = self._groups.get(group_id) if group_id is not None else None
        if group is not None:
            for tp in partitions:
                group.holders[tp] = sub

    def release(self, group_id: str | None, partitions: Collection[TopicPartition], sub: EmbeddedSubscription) -> None:
        """Let go of partitions sub holds, and wake the members waiting for them."""
        group = self._groups.get(group_id) if group_id is not None else None
        if group is None:
            return
        for tp in partitions:
            if group.holders.get(tp) is sub:
                del group.holders[tp]
        for member in group.members:
            member.wake.set()

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        check_message_size(topic, value)
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

    async def replay(
        self, topics: Sequence[str], handler: Handler, *, partitions: Collection[int] | None = None
    ) -> int:
        count = 0
        for (topic, p), records in sorted(self._logs.items()):
            if topic in topics and (partitions is None or p in partitions):
                for record in list(records):
                    await handler(record)
                    count += 1
        return count

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {p: len(self._logs[(topic, p)]) for p in range(self._partitions.get(topic, 0))}

    async def subscribe_batches(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        handler: BatchHandler,
        max_records: int = 500,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        retry_backoff: tuple[float, float] = DEFAULT_RETRY_BACKOFF,
    ) -> EmbeddedSubscription:
        return self._join(
            EmbeddedSubscription(
                self,
                topics,
                group_id,
                batch_handler=handler,
                max_records=max_records,
                on_assign=on_assign,
                on_revoke=on_revoke,
                retry_backoff=retry_backoff,
            )
        )

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group_id: str | None,
        handler: Handler,
        max_records: int = 500,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        retry_backoff: tuple[float, float] = DEFAULT_RETRY_BACKOFF,
        by_key: bool = True,
        from_end: bool = False,
    ) -> EmbeddedSubscription:
        # As on Kafka: up to max_records per round, shared out across the partitions, handled by key.
        return self._join(
            EmbeddedSubscription(
                self,
                topics,
                group_id,
                handler=handler,
                by_key=by_key,
                max_records=max_records,
                on_assign=on_assign,
                on_revoke=on_revoke,
                retry_backoff=retry_backoff,
            ),
            from_end=from_end,
        )

    def _join(self, sub: EmbeddedSubscription, *, from_end: bool = False) -> EmbeddedSubscription:
        group_id = sub.group_id
        for topic in sub.topics:
            self._ensure(topic)
        if group_id is None:
            if from_end:
                sub.start_at = {tp: len(records) for tp, records in self._logs.items() if tp[0] in sub.topics}
            sub._assign(frozenset(tp for tp in self._logs if tp[0] in sub.topics))
            self._broadcast.append(sub)
        else:
            group = self._groups.setdefault(group_id, _Group())
            group.members.append(sub)
            self._rebalance(group)
        sub.start()
        return sub

    def _rebalance(self, group: _Group) -> None:
        members = group.members
        topics = sorted({t for m in members for t in m.topics})
        share: dict[int, set[TopicPartition]] = {i: set() for i in range(len(members))}
        for topic in topics:
            interested = [i for i, m in enumerate(members) if topic in m.topics]
            for p in range(self._partitions[topic]):
                share[interested[p % len(interested)]].add((topic, p))
        for i, member in enumerate(members):
            member._assign(frozenset(share[i]))

    async def leave(self, sub: EmbeddedSubscription) -> None:
        """Take sub out of its group and give its partitions to the others."""
        if sub.group_id is None:
            if sub in self._broadcast:
                self._broadcast.remove(sub)
            return
        group = self._groups.get(sub.group_id)
        if group is not None and sub in group.members:
            group.members.remove(sub)
            sub._assign(frozenset())
            self.release(sub.group_id, [tp for tp, holder in group.holders.items() if holder is sub], sub)
            self._rebalance(group)
        self._wake_all()
