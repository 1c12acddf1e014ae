"""Embedded audit store: SQLite, with triggers that refuse UPDATE and DELETE."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from baton.audit.chain import Head, Record
from baton.audit.store import DuplicateRecordError, StoreNotFoundError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    record_id TEXT PRIMARY KEY, topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE, workflow_id TEXT NOT NULL, workflow_seq INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS audit_by_position ON audit_records (topic, partition, "offset");
CREATE INDEX IF NOT EXISTS audit_by_workflow ON audit_records (workflow_id, workflow_seq);
CREATE TABLE IF NOT EXISTS audit_anchors (anchor_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_anchors_no_update BEFORE UPDATE ON audit_anchors
    BEGIN SELECT RAISE(ABORT, 'audit_anchors is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_anchors_no_delete BEFORE DELETE ON audit_anchors
    BEGIN SELECT RAISE(ABORT, 'audit_anchors is append-only'); END;
"""

_PAGE = 1000


class SqliteAuditStore:
    """The demo's audit store; same contract as the MongoDB one."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """Open (create=True: and create) the store at path; create=False raises StoreNotFoundError
        rather than leave a file or directory behind where there was none."""
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        else:
            if not path.is_file():
                raise StoreNotFoundError(f"{path}: no such file")
            uri = f"{path.resolve().as_uri()}?mode=rw"
            self._db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = asyncio.Lock()

    async def exists(self) -> bool:
        try:
            row = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_records'"
            ).fetchone()
        except sqlite3.DatabaseError:  # a file that is not an SQLite database
            return False
        return row is not None

    async def setup(self) -> None:
        self._db.executescript(_SCHEMA)

    async def append(self, records: Sequence[Record]) -> None:
        rows = [
            (
                r["_id"],
                r["topic"],
                r["partition"],
                r["offset"],
                r["event_id"],
                r["workflow_id"],
                r["workflow_seq"],
                json.dumps({k: v for k, v in r.items() if k != "_id"}),
            )
            for r in records
        ]
        async with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    'INSERT INTO audit_records (record_id, topic, partition, "offset", event_id, workflow_id, '
                    "workflow_seq, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise DuplicateRecordError(str(exc)) from exc

    def _one(self, sql: str, *args: object) -> Record | None:
        row = self._db.execute(sql, args).fetchone()
        return _doc(row) if row else None

    async def head_at(self, record_id: str) -> Head | None:
        doc = self._one("SELECT record_id, doc FROM audit_records WHERE record_id = ?", record_id)
        return Head(doc["offset"], doc["hash"]) if doc else None

    async def workflow_heads(self, workflow_ids: Sequence[str]) -> dict[str, Head]:
        heads = {wf: await self._workflow_head(wf) for wf in workflow_ids}
        return {wf: h for wf, h in heads.items() if h is not None}

    async def last_of_partition(self, topic: str, partition: int) -> Head | None:
        doc = self._one(
            'SELECT record_id, doc FROM audit_records WHERE topic = ? AND partition = ? ORDER BY "offset" DESC LIMIT 1',
            topic,
            partition,
        )
        return Head(doc["offset"], doc["hash"]) if doc else None

    async def _workflow_head(self, workflow_id: str) -> Head | None:
        doc = self._one(
            "SELECT record_id, doc FROM audit_records WHERE workflow_id = ? ORDER BY workflow_seq DESC LIMIT 1",
            workflow_id,
        )
        return Head(doc["workflow_seq"], doc["hash"]) if doc else None

    async def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(event_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found |= {
                r[0] for r in self._db.execute(f"SELECT event_id FROM audit_records WHERE event_id IN ({marks})", chunk)
            }
        return found

    async def write_anchor(self, anchor: Record) -> None:
        async with self._lock:
            self._db.execute(
                "INSERT INTO audit_anchors (anchor_id, created_at, doc) VALUES (?, ?, ?)",
                (anchor["anchor_id"], anchor["created_at"], json.dumps(anchor)),
            )

    async def _pages(self, sql: str, args: tuple[object, ...]) -> AsyncIterator[Record]:
        cursor = self._db.execute(sql, args)
        while True:
            rows = cursor.fetchmany(_PAGE)
            if not rows:
                return
            for row in rows:
                yield _doc(row)
            await asyncio.sleep(0)

    def stream(self) -> AsyncIterator[Record]:
        return self._pages('SELECT record_id, doc FROM audit_records ORDER BY topic, partition, "offset"', ())

    def stream_by_workflow(self, workflow_id: str | None = None) -> AsyncIterator[Record]:
        if workflow_id is None:
            return self._pages("SELECT record_id, doc FROM audit_records ORDER BY workflow_id, workflow_seq", ())
        return self._pages(
            "SELECT record_id, doc FROM audit_records WHERE workflow_id = ? ORDER BY workflow_seq", (workflow_id,)
        )

    async def anchors(self) -> AsyncIterator[Record]:
        for (doc,) in self._db.execute("SELECT doc FROM audit_anchors ORDER BY created_at, anchor_id"):
            yield json.loads(doc)

    async def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM audit_records").fetchone()[0])

    async def close(self) -> None:
        self._db.close()


def _doc(row: tuple[str, str]) -> Record:
    doc: Record = json.loads(row[1])
    doc["_id"] = row[0]
    return doc
