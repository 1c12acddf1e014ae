"""Kafka adapter over aiokafka: idempotent acks=all producer, manual commit after the handler returns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)

from baton.bus.base import (
    DEFAULT_RETRY_BACKOFF,
    MAX_MESSAGE_BYTES,
    Backoff,
    BatchHandler,
    BusRecord,
    BusUnavailableError,
    Handler,
    Headers,
    KeyLanes,
    LoopHealth,
    MessageTooLargeError,
    PartitionsCallback,
    check_message_size,
)

log = logging.getLogger(__name__)

_POLL_TIMEOUT_MS = 200
# A member that does not poll for this long is taken out of the group (aiokafka leaves it). Handling
# one poll's records (at most max_records, different keys concurrently) must fit in it: a slow handler
# then delays the next poll, it does not trigger a rebalance storm. The
# rebalance timeout (how long the broker waits for members to re-join) is the same figure, because a
# member re-joins only after its record in hand finished and on_revoke ran.
_MAX_POLL_INTERVAL_MS = 300_000
# Large enough for many partitions' worth of MAX_MESSAGE_BYTES messages in one fetch.
_FETCH_MAX_BYTES = 16 * MAX_MESSAGE_BYTES

_CONSUMER_LIMITS: dict[str, Any] = {
    "max_partition_fetch_bytes": MAX_MESSAGE_BYTES,
    "fetch_max_bytes": _FETCH_MAX_BYTES,
}


def _record(msg: Any) -> BusRecord:
    return BusRecord(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value if msg.value is not None else b"",
        headers=tuple((k, v if v is not None else b"") for k, v in (msg.headers or ())),
    )


def _pairs(tps: Collection[TopicPartition]) -> frozenset[tuple[str, int]]:
    return frozenset((tp.topic, tp.partition) for tp in tps)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Passes aiokafka's rebalance callbacks to the subscription (aiokafka awaits them)."""

    def __init__(self, sub: KafkaSubscription) -> None:
        self._sub = sub

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sub._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._sub._assigned_now(assigned)


class KafkaSubscription:
    """One consumer-group member; commits each partition's progress after its records were handled.

    Revocation runs in aiokafka's rebalance callback, while the member still owns the partitions: it
    waits for the record or batch in hand, which is committed, then awaits on_revoke. New partitions
    are paused in the callback and taken over by the consumer loop (on_assign, then resume): aiokafka
    sends no heartbeat while on_partitions_assigned runs, so a slow on_assign there (a state restore)
    would get the member evicted and start another rebalance.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str | None,
        client_id: str,
        *,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        max_records: int = 500,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        retry_backoff: tuple[float, float] = DEFAULT_RETRY_BACKOFF,
        by_key: bool = True,
        from_end: bool = False,
    ) -> None:
        self._from_end = from_end and group_id is None
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="latest" if self._from_end else "earliest",
            max_poll_records=max_records,
            max_poll_interval_ms=_MAX_POLL_INTERVAL_MS,
            rebalance_timeout_ms=_MAX_POLL_INTERVAL_MS,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            # Range assignment gives partition i of every topic to one member: a workflow's events
            # (keyed by workflow id) on all the topics a service reads land on the same replica.
            partition_assignment_strategy=(RangePartitionAssignor,),
            **_CONSUMER_LIMITS,
        )
        self._topics = tuple(topics)
        self._group_id = group_id
        self._handler = handler
        self._lanes = KeyLanes(handler, log, by_key=by_key) if handler is not None else None
        self._batch_handler = batch_handler
        self._max_records = max_records
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._retry_backoff = retry_backoff
        self._owned: set[TopicPartition] = set()  # taken over (on_assign done) and not revoked since
        # Where to resume each partition after a failure: its committed offset, as far as this member knows.
        self._resume_at: dict[TopicPartition, int] = {}
        # Held while the loop follows the assignment and handles a poll's records (and commits them);
        # revocation takes it, so it happens between two records, never during one.
        self._handling = asyncio.Lock()
        self._revoking = False
        self._revocations = 0
        self._health = LoopHealth()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._killed = False
        self._stopping = asyncio.Event()

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        return _pairs(self._consumer.assignment())

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done() and self._health.failures == 0

    @property
    def last_poll(self) -> float:
        return self._health.last_poll

    def lag(self) -> dict[tuple[str, int], int]:
        lags: dict[tuple[str, int], int] = {}
        for tp in list(self._owned):
            end, position = self._consumer.highwater(tp), self._resume_at.get(tp)
            if end is not None and position is not None:
                lags[(tp.topic, tp.partition)] = max(0, end - position)
        return lags

    async def start(self) -> None:
        self._consumer.subscribe(list(self._topics), listener=_Rebalance(self))
        await self._consumer.start()
        if self._from_end:
            await self._pin_end_positions()
        step = self._step_batch if self._batch_handler is not None else self._step
        self._task = asyncio.create_task(self._supervise(step), name=f"kafka-consumer-{self._group_id}")

    async def _pin_end_positions(self) -> None:
        """Resolve every partition's position (the end) now, so a record published after start() is read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while True:
            known = {t: self._consumer.partitions_for_topic(t) for t in self._topics}
            wanted = {TopicPartition(t, p) for t, ps in known.items() for p in ps or ()}
            if all(known.values()) and wanted <= self._consumer.assignment():
                break
            if loop.time() > deadline:
                raise BusUnavailableError(f"no partitions of {list(self._topics)} assigned within 10 s")
            await asyncio.sleep(0.05)
        for tp in wanted:
            await self._consumer.position(tp)

    # -- rebalance ---------------------------------------------------------------------------------

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        if self._killed:
            return
        self._revocations += 1
        self._revoking = True
        try:
            async with self._handling:
                if not self._killed:  # a crash runs no on_revoke
                    await self._let_go(set(revoked))
        finally:
            self._revoking = False

    def _assigned_now(self, assigned: set[TopicPartition]) -> None:
        # Nothing of a new partition is read until the loop ran on_assign for it.
        fresh = [tp for tp in assigned if tp not in self._owned]
        if fresh:
            self._consumer.pause(*fresh)

    async def _follow_assignment(self) -> None:
        """Take over newly assigned partitions (on_assign, then resume them); let go of vanished ones."""
        current = self._consumer.assignment()
        gone = self._owned - current
        if gone:
            await self._let_go(gone)
        new = current - self._owned
        if not new:
            return
        self._consumer.pause(*new)
        if self._on_assign is not None:
            await self._on_assign(_pairs(new))
        self._owned |= new
        still = new & self._consumer.assignment()
        if still:
            self._consumer.resume(*still)

    async def _let_go(self, partitions: set[TopicPartition]) -> None:
        mine = partitions & self._owned
        self._owned -= mine
        for tp in partitions:
            self._resume_at.pop(tp, None)
        if self._lanes is not None:
            self._lanes.forget([(tp.topic, tp.partition) for tp in partitions])
        if not mine or self._on_revoke is None:
            return
        try:
            await self._on_revoke(_pairs(mine))
        except Exception:
            # The partitions go regardless: holding them back would stall the whole group.
            log.exception("on_revoke failed for %s (group %s); the partitions move on", sorted(mine), self._group_id)

    # -- the consumer loop -------------------------------------------------------------------------

    async def _supervise(self, step: Callable[[], Awaitable[bool]]) -> None:
        """Run the loop until stop or kill; a failure outside the handler is logged and the loop resumes
        from the last committed offsets after a backoff."""
        handler_backoff = Backoff(*self._retry_backoff)
        loop_backoff = Backoff(*self._retry_backoff)
        while not self._closing:
            try:
                failed = await step()
            except Exception:
                self._health.failed()
                delay = loop_backoff.failed()
                log.exception(
                    "consumer of %s (group %s) failed outside its handler; resuming from the last committed "
                    "offsets in %.2fs",
                    ",".join(self._topics),
                    self._group_id,
                    delay,
                )
                try:
                    self._rewind()
                except Exception:
                    log.exception("could not seek back to the committed offsets; the next rebalance resets them")
                await self._rest(delay)
                continue
            self._health.polled()
            loop_backoff.succeeded()
            if failed:
                await self._rest(handler_backoff.failed())
            else:
                handler_backoff.succeeded()

    async def _rest(self, delay: float) -> None:
        """Wait before retrying; stop() cuts it short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _rewind(self) -> None:
        """Seek every owned partition back to where this member last committed, so nothing is skipped."""
        assignment = self._consumer.assignment()
        for tp, offset in self._resume_at.items():
            if tp in assignment:
                self._consumer.seek(tp, offset)

    def _put_back(self, tp: TopicPartition, offset: int) -> None:
        """Read this partition again from offset (records fetched but not handled)."""
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, offset)

    async def _poll(self) -> tuple[int, dict[TopicPartition, list[Any]]]:
        """Fetch up to max_records; returns them with the revocation count they were fetched under."""
        revocations = self._revocations
        batches: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
            timeout_ms=_POLL_TIMEOUT_MS, max_records=self._max_records
        )
        return revocations, batches

    async def _mine(
        self, revocations: int, batches: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """Follow the assignment, then keep the fetched records of partitions taken over; put the others back."""
        try:
            await self._follow_assignment()
        except BaseException:
            if revocations == self._revocations:
                for tp, messages in batches.items():
                    self._put_back(tp, messages[0].offset)
            raise
        if revocations != self._revocations:
            # Fetched under an assignment revoked since: the new one reads from the committed offsets.
            return {}
        mine: dict[TopicPartition, list[Any]] = {}
        for tp, messages in sorted(batches.items(), key=lambda item: (item[0].topic, item[0].partition)):
            if tp in self._owned:
                mine[tp] = messages
                self._resume_at.setdefault(tp, messages[0].offset)
            else:
                self._put_back(tp, messages[0].offset)
        return mine

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._group_id is not None:
            await self._consumer.commit(offsets)
        self._resume_at.update(offsets)

    async def _step(self) -> bool:
        """One poll: records of one key in order, different keys concurrently; returns whether a handler failed."""
        assert self._lanes is not None
        revocations, batches = await self._poll()
        async with self._handling:
            mine = await self._mine(revocations, batches)
            if not mine:
                return False
            handled = await self._lanes.handle(
                [_record(m) for messages in mine.values() for m in messages],
                stopping=lambda: self._closing or self._revoking,
            )
            if handled.commit:
                await self._commit({TopicPartition(t, p): offset for (t, p), offset in handled.commit.items()})
            for (t, p), offset in handled.reread.items():
                # Not handled (a failure, or a hand-over): read again from here, by this member or the next owner.
                self._put_back(TopicPartition(t, p), offset)
        return handled.failed

    async def _step_batch(self) -> bool:
        """One poll, handed to the batch handler at once; returns whether it failed."""
        assert self._batch_handler is not None
        revocations, batches = await self._poll()
        async with self._handling:
            mine = await self._mine(revocations, batches)
            if not mine:
                return False
            try:
                await self._batch_handler([_record(m) for messages in mine.values() for m in messages])
            except Exception:
                log.exception("batch handler failed on %d records; re-reading the batch", sum(map(len, mine.values())))
                for tp, messages in mine.items():
                    self._put_back(tp, messages[0].offset)
                return True
            await self._commit({tp: messages[-1].offset + 1 for tp, messages in mine.items()})
        return False

    async def stop(self) -> None:
        self._closing = True
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Leaving the group hands the partitions to the others: run on_revoke before that.
        async with self._handling:
            await self._let_go(set(self._owned))
        await self._consumer.stop()

    async def kill(self) -> None:
        self._closing = self._killed = True
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


class KafkaBus:
    """Bus on a Kafka-protocol broker."""

    def __init__(
        self, bootstrap_servers: str, *, client_id: str = "baton", partitions: int = 4, linger_ms: int = 0
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._linger_ms = linger_ms
        self._client_id = client_id
        self.default_partitions = partitions
        self._producer: AIOKafkaProducer | None = None
        self._subscriptions: list[KafkaSubscription] = []
        self._offsets_reader: AIOKafkaConsumer | None = None
        self._offsets_reader_lock = asyncio.Lock()

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_request_size=MAX_MESSAGE_BYTES,
        )
        await self._producer.start()

    async def stop(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        if self._offsets_reader is not None:
            await self._offsets_reader.stop()
            self._offsets_reader = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def create_topics(
        self, topics: Sequence[str], *, partitions: int | None = None, compacted: bool = False
    ) -> None:
        config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
        if compacted:
            config["cleanup.policy"] = "compact"
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=f"{self._client_id}-admin")
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(t, partitions or self.default_partitions, 1, topic_configs=config)
                for t in topics
                if t not in existing
            ]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
        finally:
            await admin.close()

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        check_message_size(topic, value)
        if self._producer is None:
            raise RuntimeError("KafkaBus.publish called before start()")
        try:
            await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            # Over the producer's or the topic's own limit once key, headers and framing are added.
            raise MessageTooLargeError(topic, len(value)) from exc
        except (KafkaError, TimeoutError) as exc:
            raise BusUnavailableError(
                f"Kafka did not acknowledge a publish to {topic} ({type(exc).__name__}: {exc}); "
                "nothing was written for certain, so it is retried later"
            ) from exc

    def _reader(self, suffix: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-{suffix}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **_CONSUMER_LIMITS,
        )

    @staticmethod
    async def _partitions_of(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
        # topics() fetches metadata without keeping it; ask the client for the whole cluster instead.
        cluster = await consumer._client.fetch_all_metadata()
        return [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]

    async def replay(
        self, topics: Sequence[str], handler: Handler, *, partitions: Collection[int] | None = None
    ) -> int:
        consumer = self._reader("replay")
        await consumer.start()
        count = 0
        try:
            tps = [
                tp
                for tp in await self._partitions_of(consumer, topics)
                if partitions is None or tp.partition in partitions
            ]
            if not tps:
                return 0
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if end[tp] > 0}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500)
                for tp, messages in batches.items():
                    for msg in messages:
                        if msg.offset >= end[tp]:
                            break
                        await handler(_record(msg))
                        count += 1
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
        finally:
            await consumer.stop()
        return count

    async def end_offsets(self, topic: str) -> dict[int, int]:
        async with self._offsets_reader_lock:
            if self._offsets_reader is None:
                reader = self._reader("offsets")
                await reader.start()
                self._offsets_reader = reader
        tps = await self._partitions_of(self._offsets_reader, [topic])
        if not tps:
            return {}
        ends: dict[TopicPartition, int] = await self._offsets_reader.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}

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
    ) -> KafkaSubscription:
        sub = KafkaSubscription(
            self._bootstrap,
            topics,
            group_id,
            self._client_id,
            batch_handler=handler,
            max_records=max_records,
            on_assign=on_assign,
            on_revoke=on_revoke,
            retry_backoff=retry_backoff,
        )
        await sub.start()
        self._subscriptions.append(sub)
        return sub

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
    ) -> KafkaSubscription:
        sub = KafkaSubscription(
            self._bootstrap,
            topics,
            group_id,
            self._client_id,
            handler=handler,
            by_key=by_key,
            from_end=from_end,
            max_records=max_records,
            on_assign=on_assign,
            on_revoke=on_revoke,
            retry_backoff=retry_backoff,
        )
        await sub.start()
        self._subscriptions.append(sub)
        return sub
