"""The bus interface every service is written against; adapters: Kafka and embedded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Headers = tuple[tuple[str, bytes], ...]


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


class Subscription(Protocol):
    """A running consumer; its offsets are committed only after the handler returned."""

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        """Partitions currently owned by this member."""
        ...

    async def stop(self) -> None:
        """Finish the message in hand, commit it and leave the group."""
        ...

    async def kill(self) -> None:
        """Stop abruptly without committing, as a crash would (for tests and chaos runs)."""
        ...


class Bus(Protocol):
    """Publish keyed messages; consume them in groups with commit-after-handle."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create_topics(self, topics: Sequence[str], *, partitions: int | None = None) -> None:
        """Create topics that do not exist yet."""
        ...

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        """Publish and wait until the bus acknowledged the write."""
        ...

    async def replay(self, topics: Sequence[str], handler: Handler) -> int:
        """Hand every record now in the topics to handler (per-partition order); returns the count."""
        ...

    async def subscribe_batches(
        self, topics: Sequence[str], *, group_id: str, handler: BatchHandler, max_records: int = 500
    ) -> Subscription:
        """Like subscribe, but the handler gets up to max_records at a time (each partition in order);
        the batch is committed only after the handler returned, and re-delivered whole if it raised."""
        ...

    async def subscribe(self, topics: Sequence[str], *, group_id: str | None, handler: Handler) -> Subscription:
        """Consume topics as a member of group_id; group_id None reads every partition from the start."""
        ...
