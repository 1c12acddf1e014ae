"""The approval store every contract test runs against: embedded SQLite, and MongoDB (FerretDB) as integration."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from baton.approvals.model import ApprovalStore, OpenStore
from baton.approvals.store_mongo import MongoApprovalStore
from baton.approvals.store_sqlite import SqliteApprovalStore


@pytest.fixture(params=["embedded", pytest.param("mongodb", marks=pytest.mark.integration)])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    opened: list[ApprovalStore] = []
    database = f"approvals_{uuid.uuid4().hex[:8]}"

    async def open_one() -> ApprovalStore:
        store: ApprovalStore
        if request.param == "mongodb":
            store = MongoApprovalStore(request.getfixturevalue("mongodb_url"), database=database)
        else:
            store = SqliteApprovalStore(tmp_path / "approvals.db")
        await store.setup()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()
