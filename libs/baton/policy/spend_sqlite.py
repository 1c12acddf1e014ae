"""Embedded spend store: one SQLite row per tenant's day, each operation one `BEGIN IMMEDIATE` transaction.

The immediate transaction takes the database's write lock before it reads the account, so operations of every
connection and process on the file are serialised: the change is computed from the row as it is, never from a
stale copy. Calls run on one worker thread owning the connection (the event loop never waits on SQLite I/O).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from baton.policy.spend import AccountChange, SpendAccount, account_id

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend_accounts (
    account_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, day TEXT NOT NULL, version INTEGER NOT NULL,
    doc TEXT NOT NULL);
"""
# Waiting for another connection's transaction: long enough for any burst of operations to drain.
_BUSY_TIMEOUT_S = 60.0


class SqliteSpendStore:
    """Spend accounts in a SQLite file (shared safely by several stores and processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-spend-sqlite")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # an acknowledged reservation survives a power cut
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def setup(self) -> None:
        await self._run(self._connection)

    @staticmethod
    def _read(db: sqlite3.Connection, tenant_id: str, day: str) -> SpendAccount:
        row = db.execute(
            "SELECT doc FROM spend_accounts WHERE account_id = ?", (account_id(tenant_id, day),)
        ).fetchone()
        return SpendAccount.from_doc(json.loads(row[0])) if row else SpendAccount(tenant_id, day)

    def _account(self, tenant_id: str, day: str) -> SpendAccount:
        return self._read(self._connection(), tenant_id, day)

    async def account(self, tenant_id: str, day: str) -> SpendAccount:
        return await self._run(self._account, tenant_id, day)

    def _update(self, tenant_id: str, day: str, change: AccountChange[T]) -> T:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            current = self._read(db, tenant_id, day)
            changed, result = change(current)
            if changed is not None:
                changed.version = current.version + 1
                db.execute(
                    "INSERT INTO spend_accounts (account_id, tenant_id, day, version, doc) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (account_id) DO UPDATE SET version = excluded.version, doc = excluded.doc",
                    (changed.account_id, tenant_id, day, changed.version, json.dumps(changed.to_doc())),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    async def update(self, tenant_id: str, day: str, change: AccountChange[T]) -> T:
        return await self._run(self._update, tenant_id, day, change)

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
