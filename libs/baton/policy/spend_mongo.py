"""MongoDB spend store over pymongo's native async client: each version of an account is a new document.

Optimistic concurrency by insert: an operation reads the latest version v of the account, computes the change,
and inserts it as version v + 1 under the `_id` "<day>/<tenant>#<v + 1>". The unique `_id` lets exactly one of
the replicas racing from version v win; a loser (DuplicateKeyError) reads again, recomputes, and tries again
after a short jittered backoff. Within one process, operations on one account queue on a lock first, so only
other replicas race it.

Why not `replace_one({"_id": id, "version": v}, ...)`: a MongoDB server applies that filter and the write
atomically, but FerretDB 1.x (what the tests run against) does not: it queries the matching documents, then
writes them by `_id` in a separate step (FerretDB issue 2612), so two replicas both matched version v and both
"won" (found by the concurrency contract test: 100 reservations all held against room for 40). An insert
under a unique `_id` is atomic on every MongoDB-compatible server.

Superseded versions are shrunk to a stub (their `_id` and version, no account) once STUBBED_AFTER newer ones
exist, so a day's documents stay small; the stub is never deleted, because its `_id` is what refuses a
replica that read a long-gone version and tries to write the one after it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, WriteConcern
from pymongo.errors import DuplicateKeyError

from baton.policy.spend import AccountChange, SpendAccount, SpendConflictError, account_id
from baton.runtime import KeyedLocks

T = TypeVar("T")

COLLECTION = "spend_accounts"
MAX_TRIES = 1000
# Versions kept whole behind the latest (a reader of the latest never meets a stub).
STUBBED_AFTER = 8
_BACKOFF_CAP_S = 0.05


def version_id(account: str, version: int) -> str:
    return f"{account}#{version:012d}"


class MongoSpendStore:
    """Spend accounts in `spend_accounts`: one document per version of a tenant's day, the newest authoritative."""

    def __init__(
        self,
        url: str,
        *,
        database: str = "baton",
        write_concern: str | int = "majority",
        journal: bool = True,
        client: AsyncMongoClient[dict[str, Any]] | None = None,
        max_tries: int = MAX_TRIES,
    ) -> None:
        self._own_client = client is None
        self._client: AsyncMongoClient[dict[str, Any]] = client or AsyncMongoClient(url, tz_aware=True)
        db = self._client.get_database(database, write_concern=WriteConcern(w=write_concern, j=journal))
        self.versions = db.get_collection(COLLECTION)
        self.max_tries = max_tries
        self._random = random.Random()
        # One operation per account at a time in this process: only other replicas race it.
        self._locks = KeyedLocks()
        self.conflicts = 0  # writes that lost a race to another replica (and were redone)

    async def setup(self) -> None:
        """The index that finds an account's latest version."""
        await self.versions.create_index([("account", ASCENDING), ("version", DESCENDING)], name="latest_version")

    async def account(self, tenant_id: str, day: str) -> SpendAccount:
        doc = await self.versions.find_one({"account": account_id(tenant_id, day)}, sort=[("version", DESCENDING)])
        if doc is None:
            return SpendAccount(tenant_id, day)
        return SpendAccount.from_doc(doc["state"])

    async def _write(self, current: SpendAccount, changed: SpendAccount) -> bool:
        """Store `changed` as the version after current's, unless another writer stored that version first."""
        changed.version = current.version + 1
        account = changed.account_id
        try:
            await self.versions.insert_one(
                {
                    "_id": version_id(account, changed.version),
                    "account": account,
                    "version": changed.version,
                    "state": changed.to_doc(),
                }
            )
        except DuplicateKeyError:
            return False
        old = changed.version - STUBBED_AFTER
        if old >= 1:
            # Best effort and idempotent: an account not shrunk is only larger, never wrong.
            await self.versions.update_one({"_id": version_id(account, old)}, {"$unset": {"state": ""}})
        return True

    async def update(self, tenant_id: str, day: str, change: AccountChange[T]) -> T:
        async with self._locks.hold(account_id(tenant_id, day)):
            return await self._update(tenant_id, day, change)

    async def _update(self, tenant_id: str, day: str, change: AccountChange[T]) -> T:
        for attempt in range(self.max_tries):
            current = await self.account(tenant_id, day)
            changed, result = change(current)
            if changed is None or await self._write(current, changed):
                return result
            self.conflicts += 1
            # Lost the race to another writer: back off a little (jittered, so racers spread out) and redo.
            await asyncio.sleep(self._random.uniform(0, min(_BACKOFF_CAP_S, 0.001 * 2 ** min(attempt, 6))))
        raise SpendConflictError(
            f"the spend account of {tenant_id!r} on {day} changed under every one of {self.max_tries} tries: "
            "too many replicas write it at once; retry the request"
        )

    async def close(self) -> None:
        """Close the client this store opened (not one it was given); closing again does nothing."""
        if self._own_client:
            self._own_client = False
            await self._client.close()
