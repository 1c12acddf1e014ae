"""The audit store every audit test runs against: embedded SQLite, and MongoDB (FerretDB) as integration."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from baton.audit.mongo_store import MongoAuditStore
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.store import AuditStore


@pytest.fixture(params=["embedded", pytest.param("mongodb", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    s: AuditStore
    if request.param == "mongodb":
        s = MongoAuditStore(request.getfixturevalue("mongodb_url"), database=f"audit_{uuid.uuid4().hex[:8]}")
    else:
        s = SqliteAuditStore(tmp_path / "audit.db")
    await s.setup()
    yield s
    await s.close()
