"""The embedded store refuses UPDATE and DELETE at the database level."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from baton.audit.sqlite_store import SqliteAuditStore


async def test_updates_and_deletes_are_refused(tmp_path: Path) -> None:
    store = SqliteAuditStore(tmp_path / "a.db")
    await store.setup()
    await store.append(
        [
            {
                "_id": "t/0/0",
                "topic": "t",
                "partition": 0,
                "offset": 0,
                "event_id": "e",
                "workflow_id": "w",
                "workflow_seq": 1,
                "hash": "h",
            }
        ]
    )
    db = sqlite3.connect(tmp_path / "a.db")
    for sql in ("UPDATE audit_records SET doc = '{}'", "DELETE FROM audit_records"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    assert await store.count() == 1
    await store.close()
