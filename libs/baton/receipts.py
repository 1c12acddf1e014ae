"""Where the validator reads what tools returned: the record kept where each tool ran.

`ToolReceipts` is the small interface the validator is handed; `LedgerToolReceipts` reads the agents'
ledger (its `tool_receipts` table, written by `baton.ledger.Ledger` as each call returns), `MemoryToolReceipts`
is the embedded one for tests. Both answer the same contract tests.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Protocol

from baton.handoff import ToolReceipt


class ToolReceipts(Protocol):
    """Looks up recorded tool calls by call id (the idempotency key the call ran under)."""

    async def find(self, call_ids: Collection[str]) -> dict[str, list[ToolReceipt]]:
        """Every recorded result of these calls, by call id (a call never recorded is absent)."""
        ...


class MemoryToolReceipts:
    """Receipts held in memory (tests, and anything that runs tools in-process)."""

    def __init__(self, receipts: Iterable[ToolReceipt] = ()) -> None:
        self._by_call: dict[str, list[ToolReceipt]] = {}
        for r in receipts:
            self.add(r)

    def add(self, receipt: ToolReceipt) -> None:
        found = self._by_call.setdefault(receipt.call_id, [])
        if receipt not in found:
            found.append(receipt)

    async def find(self, call_ids: Collection[str]) -> dict[str, list[ToolReceipt]]:
        return {c: list(self._by_call[c]) for c in call_ids if c in self._by_call}


class LedgerToolReceipts:
    """Reads the agents' ledger's tool_receipts table, read-only (the validator never writes it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used from worker threads one at a time

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            # Not mode=ro: a read-only open of a WAL database fails while no writer has it open.
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA query_only = ON")
        return self._db

    def _find(self, call_ids: Collection[str]) -> dict[str, list[ToolReceipt]]:
        out: dict[str, list[ToolReceipt]] = {}
        if not call_ids:
            return out
        ids = list(call_ids)
        try:
            with self._lock:
                rows = (
                    self._connect()
                    .execute(
                        "SELECT idempotency_key, tool, result_sha256 FROM tool_receipts "
                        f"WHERE idempotency_key IN ({', '.join('?' * len(ids))})",
                        ids,
                    )
                    .fetchall()
                )
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return out  # a ledger whose agents never ran a tool records none
            raise
        for key, tool, sha in rows:
            out.setdefault(key, []).append(ToolReceipt(call_id=key, tool=tool, result_sha256=sha))
        return out

    async def find(self, call_ids: Collection[str]) -> dict[str, list[ToolReceipt]]:
        return await asyncio.to_thread(self._find, call_ids) if call_ids else {}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
