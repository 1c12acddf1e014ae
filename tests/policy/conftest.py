"""The spend store every spend test runs against: embedded SQLite, and MongoDB (FerretDB) as integration."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from baton.policy.spend import SpendStore
from baton.policy.spend_mongo import MongoSpendStore
from baton.policy.spend_sqlite import SqliteSpendStore

# Another store over the same accounts: another guard replica, or the same one after a restart.
OpenStore = Callable[[], Awaitable[SpendStore]]


@pytest.fixture(params=["embedded", pytest.param("mongodb", marks=pytest.mark.integration)])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    opened: list[SpendStore] = []
    database = f"spend_{uuid.uuid4().hex[:8]}"

    async def open_one() -> SpendStore:
        s: SpendStore
        if request.param == "mongodb":
            s = MongoSpendStore(request.getfixturevalue("mongodb_url"), database=database)
        else:
            s = SqliteSpendStore(tmp_path / "spend.db")
        await s.setup()
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        await s.close()
