"""Kafka adapter over aiokafka: idempotent acks=all producer, manual commit after the handler returns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, TopicAlreadyExistsError

from baton.bus.base import BatchHandler, BusRecord, Handler, Headers

log = logging.getLogger(__name__)

_RETRY_DELAY_S = 1.0


def _record(msg: Any) -> BusRecord:
    return BusRecord(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value if msg.value is not None else b"",
        headers=tuple((k, v if v is not None else b"") for k, v in (msg.headers or ())),
    )


class KafkaSubscription:
    """One consumer-group member; commits each partition's progress after its records were handled."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str | None,
        handler: Handler | None,
        client_id: str,
        batch_handler: BatchHandler | None = None,
        max_records: int = 200,
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            # Range assignment gives partition i of every topic to one member: a workflow's events
            # (keyed by workflow id) on all the topics a service reads land on the same replica.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self._group_id = group_id
        self._handler = handler
        self._batch_handler = batch_handler
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        return frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())

    async def start(self) -> None:
        await self._consumer.start()
        run = self._run_batches() if self._batch_handler is not None else self._run()
        self._task = asyncio.create_task(run, name=f"kafka-consumer-{self._group_id}")

    async def _run_batches(self) -> None:
        consumer = self._consumer
        assert self._batch_handler is not None
        while not self._closing:
            batches: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=200)
            if not batches:
                continue
            records = [_record(m) for tp in sorted(batches, key=str) for m in batches[tp]]
            try:
                await self._batch_handler(records)
            except Exception:
                log.exception("batch handler failed on %d records; re-reading the batch", len(records))
                for tp, messages in batches.items():
                    consumer.seek(tp, messages[0].offset)
                await asyncio.sleep(_RETRY_DELAY_S)
                continue
            try:
                await consumer.commit({tp: messages[-1].offset + 1 for tp, messages in batches.items()})
            except (CommitFailedError, IllegalStateError, KafkaError) as exc:
                log.warning("batch commit refused (%s); the partitions' new owner will redeliver", exc)

    async def _run(self) -> None:
        consumer = self._consumer
        while not self._closing:
            batches: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                done = await self._handle_partition(tp, messages)
                if done is None or self._group_id is None:
                    continue
                try:
                    await consumer.commit({tp: done})
                except (CommitFailedError, IllegalStateError, KafkaError) as exc:
                    # The partition moved to another member mid-batch; it re-reads from the last commit.
                    log.warning("commit of %s at %d refused (%s); the new owner will redeliver", tp, done, exc)

    async def _handle_partition(self, tp: Any, messages: list[Any]) -> int | None:
        """Handle a partition's batch in order; returns the offset to commit next."""
        next_offset: int | None = None
        for msg in messages:
            if self._closing:
                break
            record = _record(msg)
            try:
                assert self._handler is not None
                await self._handler(record)
            except Exception:
                # Handlers dead-letter what they cannot process; an exception here is an outage
                # (e.g. the bus itself is down): do not commit, re-read from this message later.
                log.exception("handler failed on %s@%d; retrying from this offset", tp, msg.offset)
                self._consumer.seek(tp, msg.offset)
                await asyncio.sleep(_RETRY_DELAY_S)
                return next_offset
            next_offset = msg.offset + 1
        return next_offset

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def kill(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


class KafkaBus:
    """Bus on a Kafka-protocol broker."""

    def __init__(self, bootstrap_servers: str, *, client_id: str = "baton", partitions: int = 4) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self.default_partitions = partitions
        self._producer: AIOKafkaProducer | None = None
        self._subscriptions: list[KafkaSubscription] = []

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
        )
        await self._producer.start()

    async def stop(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def create_topics(self, topics: Sequence[str], *, partitions: int | None = None) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=f"{self._client_id}-admin")
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(t, partitions or self.default_partitions, 1) for t in topics if t not in existing]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
        finally:
            await admin.close()

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        if self._producer is None:
            raise RuntimeError("KafkaBus.publish called before start()")
        await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))

    async def replay(self, topics: Sequence[str], handler: Handler) -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-replay",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        count = 0
        try:
            # topics() fetches metadata without keeping it; ask the client for the whole cluster instead.
            cluster = await consumer._client.fetch_all_metadata()
            partitions = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
            if not partitions:
                return 0
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end: dict[Any, int] = await consumer.end_offsets(partitions)
            pending = {tp for tp in partitions if end[tp] > 0}
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

    async def subscribe_batches(
        self, topics: Sequence[str], *, group_id: str, handler: BatchHandler, max_records: int = 500
    ) -> KafkaSubscription:
        sub = KafkaSubscription(self._bootstrap, topics, group_id, None, self._client_id, handler, max_records)
        await sub.start()
        self._subscriptions.append(sub)
        return sub

    async def subscribe(self, topics: Sequence[str], *, group_id: str | None, handler: Handler) -> KafkaSubscription:
        sub = KafkaSubscription(self._bootstrap, topics, group_id, handler, self._client_id)
        await sub.start()
        self._subscriptions.append(sub)
        return sub
