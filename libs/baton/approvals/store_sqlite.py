"""Embedded approval store: one SQLite row per approval, each change one `BEGIN IMMEDIATE` transaction.

The immediate transaction takes the database's write lock before it reads the approval, so changes from every
connection and process on the file are serialised (two reviewers' votes never overwrite each other). Calls run on
one worker thread owning the connection, so the event loop never waits on SQLite I/O.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from baton.approvals.model import Approval, ApprovalChange, ApprovalState, from_doc, to_doc

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    approval_id TEXT PRIMARY KEY, state TEXT NOT NULL, queue TEXT NOT NULL, expires_at REAL NOT NULL,
    requested_at REAL NOT NULL, decided_at REAL, published INTEGER NOT NULL, version INTEGER NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (state, queue, requested_at);
CREATE INDEX IF NOT EXISTS approvals_due ON approvals (state, expires_at);
CREATE INDEX IF NOT EXISTS approvals_outbox ON approvals (published, state);
CREATE INDEX IF NOT EXISTS approvals_decided ON approvals (decided_at);
"""
_BUSY_TIMEOUT_S = 60.0
_PENDING = ApprovalState.PENDING.value


class SqliteApprovalStore:
    """Approvals in a SQLite file (shared safely by several stores and processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-approvals-sqlite")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # an acknowledged vote survives a power cut
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def setup(self) -> None:
        await self._run(self._connection)

    @staticmethod
    def _row(approval: Approval) -> tuple[Any, ...]:
        return (
            approval.approval_id,
            approval.state.value,
            approval.queue,
            approval.expires_at,
            approval.request.requested_at,
            approval.decided_at,
            int(approval.published),
            approval.version,
            json.dumps(to_doc(approval)),
        )

    def _add(self, approval: Approval) -> bool:
        cursor = self._connection().execute(
            "INSERT INTO approvals (approval_id, state, queue, expires_at, requested_at, decided_at, published, "
            "version, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (approval_id) DO NOTHING",
            self._row(approval),
        )
        return cursor.rowcount == 1

    async def add(self, approval: Approval) -> bool:
        return await self._run(self._add, approval)

    @staticmethod
    def _read(db: sqlite3.Connection, approval_id: str) -> Approval | None:
        row = db.execute("SELECT doc FROM approvals WHERE approval_id = ?", (approval_id,)).fetchone()
        return from_doc(json.loads(row[0])) if row else None

    def _get(self, approval_id: str) -> Approval | None:
        return self._read(self._connection(), approval_id)

    async def get(self, approval_id: str) -> Approval | None:
        return await self._run(self._get, approval_id)

    def _update(self, approval_id: str, change: ApprovalChange[T]) -> T:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            current = self._read(db, approval_id)
            if current is None:
                raise KeyError(approval_id)
            changed, result = change(current)
            if changed is not None:
                row = self._row(_versioned(changed, current.version + 1))
                db.execute(
                    "UPDATE approvals SET state = ?, queue = ?, expires_at = ?, requested_at = ?, decided_at = ?, "
                    "published = ?, version = ?, doc = ? WHERE approval_id = ?",
                    (*row[1:], approval_id),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    async def update(self, approval_id: str, change: ApprovalChange[T]) -> T:
        return await self._run(self._update, approval_id, change)

    def _select(self, where: str, args: tuple[Any, ...], order: str, limit: int) -> list[Approval]:
        rows = self._connection().execute(
            f"SELECT doc FROM approvals WHERE {where} ORDER BY {order} LIMIT ?", (*args, limit)
        )
        return [from_doc(json.loads(doc)) for (doc,) in rows.fetchall()]

    async def pending(self, *, queue: str | None = None, limit: int = 500) -> list[Approval]:
        if queue is None:
            return await self._run(self._select, "state = ?", (_PENDING,), "requested_at, approval_id", limit)
        return await self._run(
            self._select, "state = ? AND queue = ?", (_PENDING, queue), "requested_at, approval_id", limit
        )

    async def due(self, now: float, *, limit: int = 500) -> list[Approval]:
        return await self._run(self._select, "state = ? AND expires_at <= ?", (_PENDING, now), "expires_at", limit)

    async def unpublished(self, *, limit: int = 500) -> list[Approval]:
        return await self._run(
            self._select, "published = 0 AND state != ?", (_PENDING,), "decided_at, approval_id", limit
        )

    async def decided_since(self, since: float, *, limit: int = 10_000) -> list[Approval]:
        return await self._run(self._select, "decided_at >= ?", (since,), "decided_at", limit)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        """Close the connection; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._run(self._close)
        self._worker.shutdown(wait=True)


def _versioned(approval: Approval, version: int) -> Approval:
    return replace(approval, version=version)
