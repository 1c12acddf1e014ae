"""The agent service's ledger: steps (claim, lease, outbox), tool calls by idempotency key, tool receipts.

Baton keeps it itself, in its own SQLite file, whatever the tool: so an HTTP or MCP tool that knows nothing
of keys is still called once per key, and the handoff validator can check a context's tool values against
what each tool returned where it ran (the receipts). One connection in WAL mode; the commit that precedes
publishing anything about a step (`step_completed`) and the intent recorded before a write tool runs
(`call_started`) wait for the disk; the others do not need to, since a later durable commit covers them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS step_ledger (step_key TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, agent TEXT NOT NULL,
    started INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0, result_json TEXT,
    owner TEXT NOT NULL DEFAULT '', lease_until REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS workflow_tenants (workflow_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tool_ledger (idempotency_key TEXT PRIMARY KEY, workflow_id TEXT NOT NULL,
    tool TEXT NOT NULL, arguments_sha256 TEXT NOT NULL, state TEXT NOT NULL, result_json TEXT,
    runs INTEGER NOT NULL DEFAULT 0, replays INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS grants_used (grant_id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tool_receipts (idempotency_key TEXT NOT NULL, tool TEXT NOT NULL,
    result_sha256 TEXT NOT NULL, PRIMARY KEY (idempotency_key, result_sha256));
"""


class StepBusyError(Exception):
    """Another replica holds a live claim on this step."""


class SqliteFile:
    """One SQLite connection shared by threads: WAL, a re-entrant lock, write transactions that may be durable."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(schema)

    def close(self) -> None:
        with self.lock:  # a call still running in a worker thread finishes first
            self.db.close()

    @contextmanager
    def tx(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (joined when this thread is already in one); durable: wait for the disk."""
        with self.lock:
            if self.db.in_transaction:
                yield self.db
                return
            if durable:
                self.db.execute("PRAGMA synchronous=FULL")
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
            finally:
                if durable:
                    self.db.execute("PRAGMA synchronous=NORMAL")

    def one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute(sql, args).fetchone()
        return dict(row) if row is not None else None


@dataclass(frozen=True)
class RecordedCall:
    """What the ledger knows of a key: started (the tool may have acted) or done (with its result)."""

    tool: str
    arguments_sha256: str
    done: bool
    result: dict[str, Any] | None


@dataclass(frozen=True)
class LedgerReport:
    """Counts for tests and operators: steps, steps started twice, tool calls run and replayed."""

    problems: list[str]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.problems


class Ledger:
    """The agent service's ledger (safe to share between threads, and between processes on one host)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, _SCHEMA)

    def close(self) -> None:
        self._file.close()

    # -- steps ---------------------------------------------------------------------------------------

    def begin_step(
        self, step_key: str, *, workflow_id: str, agent: str, tenant_id: str, owner: str = "", lease_s: float = 300.0
    ) -> tuple[str | None, str]:
        """Claim a step and pin the workflow's tenant in one transaction: (stored result or None, the tenant).

        Raises StepBusyError while another owner's claim is live, so a step runs once at a time even when a
        rebalance hands its request to a second replica; a claim whose owner died expires after lease_s.
        """
        with self._file.tx() as db:
            stored = self._claim(db, step_key, workflow_id=workflow_id, agent=agent, owner=owner, lease_s=lease_s)
            if stored is not None:
                return stored, tenant_id  # a finished step is replayed, not run: its tenant was checked then
            return None, self.workflow_tenant(workflow_id, tenant_id)

    def step_started(
        self, step_key: str, *, workflow_id: str, agent: str, owner: str = "", lease_s: float = 300.0
    ) -> str | None:
        """Claim a step for `owner`; the stored result when it already completed."""
        with self._file.tx() as db:
            return self._claim(db, step_key, workflow_id=workflow_id, agent=agent, owner=owner, lease_s=lease_s)

    def _claim(
        self, db: sqlite3.Connection, step_key: str, *, workflow_id: str, agent: str, owner: str, lease_s: float
    ) -> str | None:
        now = time.time()
        row = db.execute(
            "SELECT completed, result_json, owner, lease_until FROM step_ledger WHERE step_key = ?", (step_key,)
        ).fetchone()
        if row is not None and row[0]:
            return str(row[1])
        if row is not None and row[2] != owner and row[3] > now:
            raise StepBusyError(f"step {step_key} is running at {row[2]} (claim live for {row[3] - now:.0f}s)")
        db.execute(
            "INSERT INTO step_ledger (step_key, workflow_id, agent, started, owner, lease_until) "
            "VALUES (?, ?, ?, 1, ?, ?) "
            "ON CONFLICT(step_key) DO UPDATE SET started = started + 1, owner = excluded.owner, "
            "lease_until = excluded.lease_until",
            (step_key, workflow_id, agent, owner, now + lease_s),
        )
        return None

    def step_abandoned(self, step_key: str, *, owner: str) -> None:
        """Release a claim whose step failed before completing, so a retry need not wait for the lease."""
        with self._file.tx() as db:
            db.execute(
                "UPDATE step_ledger SET lease_until = 0 WHERE step_key = ? AND owner = ? AND completed = 0",
                (step_key, owner),
            )

    def workflow_tenant(self, workflow_id: str, tenant_id: str) -> str:
        """The tenant a workflow's first step here came with (recorded now when this is its first)."""
        with self._file.tx() as db:
            db.execute(
                "INSERT INTO workflow_tenants (workflow_id, tenant_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (workflow_id, tenant_id),
            )
            row = db.execute("SELECT tenant_id FROM workflow_tenants WHERE workflow_id = ?", (workflow_id,)).fetchone()
        return str(row[0])

    def step_completed(self, step_key: str, result_json: str) -> None:
        """Store a finished step's events (the outbox), durably: they are published only after this returns."""
        with self._file.tx(durable=True) as db:
            db.execute(
                "UPDATE step_ledger SET completed = completed + 1, result_json = ? WHERE step_key = ?",
                (result_json, step_key),
            )

    # -- tool calls ----------------------------------------------------------------------------------

    def recorded_call(self, key: str) -> RecordedCall | None:
        """What is recorded under an idempotency key, if anything."""
        row = self._file.one(
            "SELECT tool, arguments_sha256, state, result_json FROM tool_ledger WHERE idempotency_key = ?", key
        )
        if row is None:
            return None
        result = json.loads(row["result_json"]) if row["result_json"] is not None else None
        return RecordedCall(row["tool"], row["arguments_sha256"], row["state"] == "done", result)

    def call_started(self, key: str, *, workflow_id: str, tool: str, arguments_sha256: str) -> RecordedCall | None:
        """Record the intent to run a call, durably, before the tool runs; returns what was there before (if any)."""
        with self._file.tx(durable=True) as db:
            row = db.execute(
                "SELECT tool, arguments_sha256, state, result_json FROM tool_ledger WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if row is not None:
                result = json.loads(row[3]) if row[3] is not None else None
                return RecordedCall(row[0], row[1], row[2] == "done", result)
            db.execute(
                "INSERT INTO tool_ledger (idempotency_key, workflow_id, tool, arguments_sha256, state, runs) "
                "VALUES (?, ?, ?, ?, 'started', 1)",
                (key, workflow_id, tool, arguments_sha256),
            )
            return None

    def call_retried(self, key: str) -> None:
        """An idempotent tool is called again under a key whose first run's outcome is unknown."""
        with self._file.tx(durable=True) as db:
            db.execute("UPDATE tool_ledger SET runs = runs + 1 WHERE idempotency_key = ?", (key,))

    def call_done(self, key: str, result: dict[str, Any], *, tool: str, result_sha256: str) -> None:
        """The call's result, and its receipt (durable with the step's outbox, before anything is published)."""
        with self._file.tx() as db:
            db.execute(
                "UPDATE tool_ledger SET state = 'done', result_json = ? WHERE idempotency_key = ?",
                (json.dumps(result, sort_keys=True), key),
            )
            self._receipt(db, key, tool, result_sha256)

    def call_refused(self, key: str) -> None:
        """The tool refused this run of the call without acting: forget the intent, unless an earlier run (whose
        outcome is unknown) is recorded under the key too, whose arguments must still be compared."""
        with self._file.tx() as db:
            db.execute("DELETE FROM tool_ledger WHERE idempotency_key = ? AND state = 'started' AND runs = 1", (key,))
            db.execute(
                "UPDATE tool_ledger SET runs = runs - 1 WHERE idempotency_key = ? AND state = 'started' AND runs > 1",
                (key,),
            )

    def call_replayed(self, key: str) -> None:
        with self._file.tx() as db:
            db.execute("UPDATE tool_ledger SET replays = replays + 1 WHERE idempotency_key = ?", (key,))

    def consume_grant(self, grant_id: str, *, key: str) -> bool:
        """Use a guard's grant once, durably before the call it permits runs; False when it was used before."""
        with self._file.tx(durable=True) as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO grants_used (grant_id, idempotency_key) VALUES (?, ?)", (grant_id, key)
            )
            return cursor.rowcount == 1

    def record_receipt(self, key: str, *, tool: str, result_sha256: str) -> None:
        """What a call (a read, which needs no ledger entry) returned, for the handoff validator."""
        with self._file.tx() as db:
            self._receipt(db, key, tool, result_sha256)

    @staticmethod
    def _receipt(db: sqlite3.Connection, key: str, tool: str, sha: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO tool_receipts (idempotency_key, tool, result_sha256) VALUES (?, ?, ?)",
            (key, tool, sha),
        )

    # -- reporting -------------------------------------------------------------------------------------

    def verify(self) -> LedgerReport:
        """Steps completed more than once are problems; counts of steps, re-runs and replayed tool calls."""
        with self._file.lock:
            db = self._file.db
            problems = [
                f"step {key} completed {n} times"
                for key, n in db.execute("SELECT step_key, completed FROM step_ledger WHERE completed > 1")
            ]

            def count(sql: str) -> int:
                return int(db.execute(sql).fetchone()[0])

            counts = {
                "steps": count("SELECT COUNT(*) FROM step_ledger"),
                "steps_started_twice": count("SELECT COUNT(*) FROM step_ledger WHERE started > 1"),
                "tool_calls": count("SELECT COUNT(*) FROM tool_ledger"),
                "tool_calls_run_twice": count("SELECT COUNT(*) FROM tool_ledger WHERE runs > 1"),
                "tool_calls_replayed": count("SELECT COUNT(*) FROM tool_ledger WHERE replays > 0"),
                "tool_calls_unfinished": count("SELECT COUNT(*) FROM tool_ledger WHERE state != 'done'"),
            }
        return LedgerReport(problems, counts)
