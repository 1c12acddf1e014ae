"""Embedded audit store: SQLite, with triggers that refuse UPDATE and DELETE.

Every call runs on one worker thread that owns the connection (the event loop never waits on SQLite
I/O); one append is one transaction. A record is stored as the exact bytes its hash covers (its
canonical encoding, hash excluded) with the hash and the chain fields beside it, so `verify` hashes
the stored bytes instead of re-encoding the record (see verification_pages).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from baton.audit.chain import Head, Record, stored_body
from baton.audit.store import DuplicateRecordError, StoreNotFoundError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    record_id TEXT PRIMARY KEY, topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE, workflow_id TEXT NOT NULL, workflow_seq INTEGER NOT NULL, doc TEXT NOT NULL,
    hash TEXT, workflow_prev_hash TEXT, payload_at INTEGER, payload_end INTEGER);
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

_PAGE = 5000
# Columns added after the first release: a store written before holds its records as JSON with the hash
# inside the doc and these columns NULL; every reader falls back to the doc for such rows.
_ADDED_COLUMNS = ("hash TEXT", "workflow_prev_hash TEXT", "payload_at INTEGER", "payload_end INTEGER")
_HASH = "COALESCE(hash, json_extract(doc, '$.hash'))"
_WORKFLOW_PREV = "COALESCE(workflow_prev_hash, json_extract(doc, '$.workflow_prev_hash'))"
_PAYLOAD_MARK = b',"payload":'
_AFTER_PAYLOAD_MARK = b',"producer":'

# One row for `verify`: record id, stored hash, the stored bytes, where the payload starts and ends in
# them (None: parse the whole doc), and the workflow columns the second pass reads.
VerificationRow = tuple[str, str | None, bytes, int | None, int | None, str, int, str | None]
WorkflowLinkRow = tuple[str, str, str, int, str | None, str | None]
# One row to restore workflow heads: workflow id, sequence, hash, topic, partition.
LinkRow = tuple[str, int, str, str, int]


def _row(r: Record) -> tuple[Any, ...]:
    body = stored_body(r)
    payload_at = body.find(_PAYLOAD_MARK)
    payload_end = body.rfind(_AFTER_PAYLOAD_MARK)
    split = payload_at >= 0 and payload_end > payload_at
    return (
        r["_id"],
        r["topic"],
        r["partition"],
        r["offset"],
        r["event_id"],
        r["workflow_id"],
        r["workflow_seq"],
        body.decode("utf-8"),
        r.get("hash"),
        r.get("workflow_prev_hash"),
        payload_at + len(_PAYLOAD_MARK) if split else None,
        payload_end if split else None,
    )


def stored_row(record: Record) -> tuple[Any, ...]:
    """The row values the store writes for a record, in the table's column order."""
    return _row(record)


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
            # FULL: a commit is on disk (the WAL fsynced) before append returns, so the auditor's Kafka
            # commit never runs ahead of the audit, even across a power loss (docs/decisions/0009).
            self._db.execute("PRAGMA synchronous=FULL")
        else:
            if not path.is_file():
                raise StoreNotFoundError(f"{path}: no such file")
            uri = f"{path.resolve().as_uri()}?mode=rw"
            self._db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
        # One thread owns every use of the connection: calls are serialised and off the event loop.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-audit-sqlite")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _exists(self) -> bool:
        try:
            row = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_records'"
            ).fetchone()
        except sqlite3.DatabaseError:  # a file that is not an SQLite database
            return False
        return row is not None

    async def exists(self) -> bool:
        return await self._run(self._exists)

    def _setup(self) -> None:
        self._db.executescript(_SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(audit_records)")}
        for column in _ADDED_COLUMNS:
            if column.split()[0] not in have:
                self._db.execute(f"ALTER TABLE audit_records ADD COLUMN {column}")

    async def setup(self) -> None:
        await self._run(self._setup)

    def _append(self, records: Sequence[Record]) -> None:
        rows = [_row(r) for r in records]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                'INSERT INTO audit_records (record_id, topic, partition, "offset", event_id, workflow_id, '
                "workflow_seq, doc, hash, workflow_prev_hash, payload_at, payload_end) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            self._db.execute("ROLLBACK")
            raise DuplicateRecordError(str(exc)) from exc
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    async def append(self, records: Sequence[Record]) -> None:
        if records:
            await self._run(self._append, records)

    def _fetchone(self, sql: str, args: Sequence[object]) -> Any:
        return self._db.execute(sql, args).fetchone()

    def _fetchall(self, sql: str, args: Sequence[object]) -> list[Any]:
        return self._db.execute(sql, args).fetchall()

    async def head_at(self, record_id: str) -> Head | None:
        row = await self._run(
            self._fetchone, f'SELECT "offset", {_HASH} FROM audit_records WHERE record_id = ?', (record_id,)
        )
        return Head(row[0], row[1]) if row else None

    async def workflow_heads(self, workflow_ids: Sequence[str]) -> dict[str, Head]:
        heads: dict[str, Head] = {}
        ids = list(workflow_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            # SQLite returns the other columns of the row MAX() picked.
            rows = await self._run(
                self._fetchall,
                f"SELECT workflow_id, MAX(workflow_seq), {_HASH} FROM audit_records "
                f"WHERE workflow_id IN ({marks}) GROUP BY workflow_id",
                chunk,
            )
            heads.update({wf: Head(seq, h) for wf, seq, h in rows})
        return heads

    async def last_of_partition(self, topic: str, partition: int) -> Head | None:
        row = await self._run(
            self._fetchone,
            f'SELECT "offset", {_HASH} FROM audit_records WHERE topic = ? AND partition = ? '
            'ORDER BY "offset" DESC LIMIT 1',
            (topic, partition),
        )
        return Head(row[0], row[1]) if row else None

    async def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(event_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._run(
                self._fetchall, f"SELECT event_id FROM audit_records WHERE event_id IN ({marks})", chunk
            )
            found |= {r[0] for r in rows}
        return found

    def _write_anchors(self, anchors: Sequence[Record]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO audit_anchors (anchor_id, created_at, doc) VALUES (?, ?, ?)",
                [(a["anchor_id"], a["created_at"], json.dumps(a)) for a in anchors],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    async def write_anchors(self, anchors: Sequence[Record]) -> None:
        if anchors:
            await self._run(self._write_anchors, anchors)

    async def _pages(self, sql: str, args: tuple[object, ...]) -> AsyncIterator[list[Any]]:
        """Rows in pages, each fetched on the worker thread; the cursor is that thread's alone."""
        cursor = await self._run(self._db.execute, sql, args)
        loop = asyncio.get_running_loop()
        # The worker fetches the next page while the caller works through this one.
        following = loop.run_in_executor(self._worker, cursor.fetchmany, _PAGE)
        try:
            while rows := await following:
                following = loop.run_in_executor(self._worker, cursor.fetchmany, _PAGE)
                yield rows
        finally:
            await asyncio.gather(following, return_exceptions=True)
            await self._run(cursor.close)

    async def _records(self, sql: str, args: tuple[object, ...]) -> AsyncIterator[Record]:
        async for rows in self._pages(sql, args):
            for row in rows:
                yield _doc(row)

    def stream(self) -> AsyncIterator[Record]:
        return self._records('SELECT record_id, doc, hash FROM audit_records ORDER BY topic, partition, "offset"', ())

    def stream_by_workflow(self, workflow_id: str | None = None) -> AsyncIterator[Record]:
        if workflow_id is None:
            return self._records(
                "SELECT record_id, doc, hash FROM audit_records ORDER BY workflow_id, workflow_seq", ()
            )
        return self._records(
            "SELECT record_id, doc, hash FROM audit_records WHERE workflow_id = ? ORDER BY workflow_seq",
            (workflow_id,),
        )

    def verification_pages(self) -> AsyncIterator[list[VerificationRow]]:
        """Every record as stored, in pages, ordered by topic, partition, offset (see VerificationRow)."""
        return self._pages(
            "SELECT record_id, hash, CAST(doc AS BLOB), payload_at, payload_end, workflow_id, workflow_seq, "
            f'{_WORKFLOW_PREV} FROM audit_records ORDER BY topic, partition, "offset"',
            (),
        )

    def workflow_link_pages(self) -> AsyncIterator[list[WorkflowLinkRow]]:
        """(record id, event id, workflow id, sequence, previous hash, hash) from the columns, by workflow and
        sequence (the index's order: no sort).

        Only as trustworthy as the columns: verify compares them with the stored bytes in its first pass.
        """
        return self._pages(
            f"SELECT record_id, event_id, workflow_id, workflow_seq, {_WORKFLOW_PREV}, {_HASH} FROM audit_records "
            "ORDER BY workflow_id, workflow_seq",
            (),
        )

    def chain_links(self) -> AsyncIterator[list[LinkRow]]:
        return self._pages(
            f"SELECT workflow_id, workflow_seq, {_HASH}, topic, partition FROM audit_records "
            "ORDER BY workflow_id, workflow_seq",
            (),
        )

    async def anchors(self) -> AsyncIterator[Record]:
        async for rows in self._pages("SELECT doc FROM audit_anchors ORDER BY created_at, anchor_id", ()):
            for (doc,) in rows:
                yield json.loads(doc)

    async def count(self) -> int:
        row = await self._run(self._fetchone, "SELECT COUNT(*) FROM audit_records", ())
        return int(row[0])

    async def close(self) -> None:
        try:
            await self._run(self._db.close)
        finally:
            self._worker.shutdown(wait=True)


def _doc(row: tuple[str, str, str | None]) -> Record:
    doc: Record = json.loads(row[1])
    if row[2] is not None:
        doc["hash"] = row[2]
    doc["_id"] = row[0]
    return doc
