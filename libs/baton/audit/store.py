"""The audit store interface; adapters: MongoDB (production) and SQLite (embedded)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from baton.audit.chain import Head, Record


class DuplicateRecordError(Exception):
    """A record with the same source position or event id is already stored."""


class AuditStore(Protocol):
    """Append-only storage of audit records and signed anchors."""

    async def setup(self) -> None:
        """Create tables/collections and indexes (idempotent)."""
        ...

    async def append(self, records: Sequence[Record]) -> None:
        """Insert records in order, all acknowledged durably before returning."""
        ...

    async def partition_head(self, topic: str, partition: int) -> Head | None:
        """Offset and hash of the last record from a source partition."""
        ...

    async def workflow_head(self, workflow_id: str) -> Head | None:
        """Sequence and hash of a workflow's last record."""
        ...

    async def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids are stored already."""
        ...

    async def write_anchor(self, anchor: Record) -> None: ...

    def stream(self) -> AsyncIterator[Record]:
        """Every record, ordered by topic, partition, offset."""
        ...

    def stream_by_workflow(self, workflow_id: str | None = None) -> AsyncIterator[Record]:
        """Records ordered by workflow and workflow sequence (one workflow's when given)."""
        ...

    def anchors(self) -> AsyncIterator[Record]: ...

    async def count(self) -> int: ...

    async def close(self) -> None: ...
