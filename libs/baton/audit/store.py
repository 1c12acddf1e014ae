"""The audit store interface; adapters: MongoDB (production) and SQLite (embedded)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from baton.audit.chain import Head, Record


class DuplicateRecordError(Exception):
    """A record with the same source position or event id is already stored."""


class StoreNotFoundError(Exception):
    """The configured location holds no audit store (and reading it must not create one)."""


class AuditStore(Protocol):
    """Append-only storage of audit records and signed anchors."""

    async def setup(self) -> None:
        """Create tables/collections and indexes (idempotent)."""
        ...

    async def exists(self) -> bool:
        """Whether the store holds an audit (its records table or collection exists); creates nothing."""
        ...

    async def append(self, records: Sequence[Record]) -> None:
        """Insert records in order, all acknowledged durably before returning."""
        ...

    async def head_at(self, record_id: str) -> Head | None:
        """Offset and hash of the record stored under this id (a point look-up), if any."""
        ...

    async def last_of_partition(self, topic: str, partition: int) -> Head | None:
        """Offset and hash of a partition's last stored record (may scan: used only after a gap)."""
        ...

    async def workflow_heads(self, workflow_ids: Sequence[str]) -> dict[str, Head]:
        """Sequence and hash of the last stored record of each workflow that has one."""
        ...

    def chain_links(self) -> AsyncIterator[list[tuple[str, int, str, str, int]]]:
        """Pages of (workflow id, workflow sequence, hash, topic, partition) of every record, ordered by
        workflow and sequence: one streaming pass restores the workflow heads."""
        ...

    async def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids are stored already."""
        ...

    async def write_anchors(self, anchors: Sequence[Record]) -> None:
        """Keep signed anchors next to the records, in one write (one sink among others: see baton.audit.anchors)."""
        ...

    def stream(self) -> AsyncIterator[Record]:
        """Every record, ordered by topic, partition, offset."""
        ...

    def stream_by_workflow(self, workflow_id: str | None = None) -> AsyncIterator[Record]:
        """Records ordered by workflow and workflow sequence (one workflow's when given)."""
        ...

    def anchors(self) -> AsyncIterator[Record]: ...

    async def count(self) -> int: ...

    async def close(self) -> None: ...
