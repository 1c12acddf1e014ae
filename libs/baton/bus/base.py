"""The bus interface every service is written against; adapters: Kafka and embedded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Headers = tuple[tuple[str, bytes], ...]

# A message carries at most about two copies of a workflow context (e.g. a handoff's snapshot and the
# diff against its parent), each bounded at 1,000,000 bytes, plus the envelope: 4 MiB leaves headroom.
# Kafka's producer, consumers and topics are configured with this same figure.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

DEFAULT_RETRY_BACKOFF = (0.05, 2.0)


class RetryLaterError(Exception):
    """Not the record's fault and not final (an outage, a step another replica is running): the record
    is re-read after a backoff, never dead-lettered; logged as a warning, without a traceback."""


class BusUnavailableError(RetryLaterError):
    """The bus could not acknowledge a publish or a commit; transient, retry later."""


def log_handler_failure(log: logging.Logger, where: str, exc: BaseException) -> None:
    """An expected, transient failure as one warning line; anything else with its traceback."""
    if isinstance(exc, RetryLaterError):
        log.warning("%s: %s; retrying after a backoff", where, exc)
    else:
        log.error("%s; retrying after a backoff", where, exc_info=exc)


class MessageTooLargeError(ValueError):
    """A message over MAX_MESSAGE_BYTES; retrying cannot help, the message must get smaller."""

    def __init__(self, topic: str, size: int, limit: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(
            f"message for {topic} is {size:,} bytes, over the bus limit of {limit:,} bytes: "
            "shrink the context it carries (a context is bounded at 1,000,000 bytes) "
            "or keep large content outside the message and pass a reference"
        )
        self.topic = topic
        self.size = size
        self.limit = limit


def check_message_size(topic: str, value: bytes) -> None:
    """Raise MessageTooLargeError when value is over MAX_MESSAGE_BYTES."""
    if len(value) > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(topic, len(value))


@dataclass(frozen=True)
class BusRecord:
    """A message as consumed: where it came from and what it holds."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default=())

    def header(self, name: str) -> bytes | None:
        """First header with this name, if any."""
        return next((v for k, v in self.headers if k == name), None)


Handler = Callable[[BusRecord], Awaitable[None]]
BatchHandler = Callable[[Sequence[BusRecord]], Awaitable[None]]
PartitionsCallback = Callable[[frozenset[tuple[str, int]]], Awaitable[None]]


TopicPartition = tuple[str, int]


@dataclass
class Handled:
    """What became of one poll's records after handle_by_key.

    commit: per partition, the offset to commit (every record before it was handled); absent when the
    partition's first record was not. reread: per partition, the first offset not handled (a failure,
    or a stop between two records), from where the partition is read again. failed: a handler raised.
    """

    commit: dict[TopicPartition, int] = field(default_factory=dict)
    reread: dict[TopicPartition, int] = field(default_factory=dict)
    failed: bool = False


def lanes_of(records: Sequence[BusRecord], *, by_key: bool = True) -> list[list[BusRecord]]:
    """The records grouped into lanes: one per key (a workflow's events, on every topic, in one lane, each
    partition's in offset order); a keyless partition's records form one lane. Without by_key, one lane
    per partition: every record strictly in offset order."""
    lanes: dict[tuple[bytes, str, int] | bytes, list[BusRecord]] = {}
    for record in records:
        if by_key and record.key is not None:
            lane: tuple[bytes, str, int] | bytes = record.key
        else:
            lane = (b"", record.topic, record.partition)
        lanes.setdefault(lane, []).append(record)
    return list(lanes.values())


class KeyLanes:
    """Handles one poll's records at a time: records of one key in order, different keys concurrently.

    Each handler still awaits what it publishes, so a state change still follows its acknowledgements;
    what overlaps is the waiting, which the producer turns into batched requests. A lane stops at a
    failed record (the key's later records wait for it) and when stopping() turns true between two
    records (a revocation or stop: hand over now). Offsets are committed only up to the first record of
    each partition not handled. Records handled after that one are remembered (a bounded number), so
    when the partition is read again from the failed record they are not handled a second time: their
    effects were acknowledged already. Past the bound, or after forget(), they are handled again, which
    idempotent handlers allow.
    """

    def __init__(self, handler: Handler, log: logging.Logger, *, by_key: bool = True, remember: int = 10_000) -> None:
        self._handler = handler
        self._by_key = by_key
        self._log = log
        self._remember = remember
        self._done: dict[TopicPartition, set[int]] = {}

    def forget(self, partitions: Collection[TopicPartition] | None = None) -> None:
        """Drop what is remembered of these partitions (all when None), e.g. when they are revoked."""
        if partitions is None:
            self._done.clear()
        for tp in partitions or ():
            self._done.pop(tp, None)

    async def handle(self, records: Sequence[BusRecord], *, stopping: Callable[[], bool]) -> Handled:
        """Handle records (one poll's, each partition's in offset order); what to commit and re-read."""
        done: set[tuple[str, int, int]] = set()
        failed = False

        async def run(lane: list[BusRecord]) -> None:
            nonlocal failed
            for record in lane:
                if stopping():
                    return
                try:
                    await self._handler(record)
                except Exception as exc:
                    # Handlers dead-letter what they cannot process; an exception here is an outage (the
                    # bus cannot acknowledge, the registry is down): re-read from this record later.
                    where = f"handler failed on {record.topic}/{record.partition}@{record.offset}"
                    log_handler_failure(self._log, where, exc)
                    failed = True
                    return
                done.add((record.topic, record.partition, record.offset))

        todo = [r for r in records if r.offset not in self._done.get((r.topic, r.partition), ())]
        lanes = lanes_of(todo, by_key=self._by_key)
        if len(lanes) == 1:
            await run(lanes[0])
        elif lanes:
            await asyncio.gather(*(run(lane) for lane in lanes))
        result = Handled(failed=failed)
        by_partition: dict[TopicPartition, list[int]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record.offset)
        for tp, offsets in by_partition.items():
            offsets.sort()
            handled = self._done.get(tp, set()) | {o for o in offsets if (tp[0], tp[1], o) in done}
            first_missing = next((o for o in offsets if o not in handled), None)
            if first_missing is None:
                result.commit[tp] = offsets[-1] + 1
                beyond = {o for o in handled if o > offsets[-1]}  # handled in an earlier poll, not yet re-read
                if beyond:
                    self._done[tp] = beyond
                else:
                    self._done.pop(tp, None)
                continue
            if first_missing > offsets[0]:
                result.commit[tp] = first_missing
            result.reread[tp] = first_missing
            ahead = {o for o in handled if o > first_missing}
            self._done[tp] = ahead if len(ahead) <= self._remember else set()
        return result


class Backoff:
    """Exponential delay: `first`, doubling on each consecutive failure up to `cap`; back to `first` on success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def failed(self) -> float:
        """The delay to wait after this failure."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def succeeded(self) -> None:
        """Start again from the first delay."""
        self._next = self.first


class LoopHealth:
    """What a consumer loop reports for liveness: when it last polled, and whether it is failing."""

    def __init__(self) -> None:
        self.last_poll = time.monotonic()
        self.failures = 0

    def polled(self) -> None:
        """A whole iteration (poll, handle, commit) succeeded."""
        self.last_poll = time.monotonic()
        self.failures = 0

    def failed(self) -> None:
        """An iteration failed outside the handler."""
        self.failures += 1


class Subscription(Protocol):
    """A running consumer; its offsets are committed only after the handler returned."""

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        """Partitions currently owned by this member."""
        ...

    @property
    def healthy(self) -> bool:
        """False while the consumer loop is failing or has ended; True once a poll succeeded again."""
        ...

    @property
    def last_poll(self) -> float:
        """time.monotonic() of the loop's last successful poll (it polls even when idle)."""
        ...

    def lag(self) -> dict[tuple[str, int], int]:
        """Per owned partition, the records not yet handled and committed (the end of the log minus the
        position); a partition not read yet is left out."""
        ...

    async def stop(self) -> None:
        """Finish the message in hand, commit it, call on_revoke and leave the group."""
        ...

    async def kill(self) -> None:
        """Stop abruptly without committing, as a crash would (for tests and chaos runs)."""
        ...


class Bus(Protocol):
    """Publish keyed messages; consume them in groups with commit-after-handle.

    A record or batch whose handler raised is read again after retry_backoff (first delay, cap),
    doubling while it keeps failing. Rebalance hooks: on_assign(partitions) is awaited before any
    record of those partitions reaches the handler; on_revoke(partitions) after the record or batch
    in hand finished and before another member gets them. Treat both as set operations: a rebalance
    may revoke and re-assign a partition the member keeps (Kafka's eager rebalance protocol does).
    """

    async def start(self) -> None:
        """Connect (Kafka) or do nothing (embedded)."""
        ...

    async def stop(self) -> None:
        """Stop every subscription, then the producer."""
        ...

    async def create_topics(
        self, topics: Sequence[str], *, partitions: int | None = None, compacted: bool = False
    ) -> None:
        """Create topics that do not exist yet; compacted keeps only the latest record per key."""
        ...

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        """Publish and wait for the acknowledgement; MessageTooLargeError is final, BusUnavailableError transient."""
        ...

    async def replay(
        self, topics: Sequence[str], handler: Handler, *, partitions: Collection[int] | None = None
    ) -> int:
        """Hand every record now in the topics (or in these partitions of them) to handler in order; the count."""
        ...

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next record will get (the high watermark); {} for an unknown topic."""
        ...

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
    ) -> Subscription:
        """Like subscribe, but up to max_records at once: committed after the handler, redelivered whole on failure."""
        ...

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
    ) -> Subscription:
        """Consume as a member of group_id (None: every partition from the start); a failed record is retried.

        from_end (only with group_id None): read only what is published after this call returns (a reply
        listener, e.g. an agent waiting for the guard's verdicts, has no use for the topic's history).

        Up to max_records per poll: one key's records in order, different keys concurrently (see
        KeyLanes); each partition is committed up to its first record not yet handled. by_key=False: every
        partition strictly in offset order (for a reader whose progress is an offset, e.g. a feed).
        """
        ...
