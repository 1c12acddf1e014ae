"""MongoDB approval store (pymongo's async client): every replica of the approval service shares it.

Each change of an approval is a new version inserted under a unique `_id` (approval#version) in
`approval_versions`: of two replicas changing the same approval from version v, exactly one inserts v + 1, the
other reads again and recomputes (as the spend accounts do, decision 0018: a conditional `replace_one` is not
atomic on every MongoDB-compatible server, an insert under a unique `_id` is). The newest version is the truth.
`approvals` holds a copy of each approval's newest version for the lists (pending, due, the outbox); a list may
lag a change by a moment, and every change re-reads the newest version before it applies, so a lagging list
never decides anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, WriteConcern
from pymongo.errors import DuplicateKeyError

from baton.approvals.model import Approval, ApprovalChange, ApprovalState, from_doc, to_doc
from baton.runtime import KeyedLocks

T = TypeVar("T")

VERSIONS = "approval_versions"
LATEST = "approvals"
MAX_TRIES = 1000
_BACKOFF_CAP_S = 0.05
_PENDING = ApprovalState.PENDING.value


class ApprovalConflictError(RuntimeError):
    """An approval changed under every try (too many writers at once); the caller retries."""


def version_id(approval_id: str, version: int) -> str:
    return f"{approval_id}#{version:012d}"


class MongoApprovalStore:
    """Approvals as versioned documents; the newest version of each is authoritative."""

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
        self.versions = db.get_collection(VERSIONS)
        self.latest = db.get_collection(LATEST)
        self.max_tries = max_tries
        self._random = random.Random()
        self._locks = KeyedLocks()  # one change per approval at a time in this process: only replicas race
        self.conflicts = 0

    async def setup(self) -> None:
        await self.versions.create_index([("approval_id", ASCENDING), ("version", DESCENDING)], name="newest")
        await self.latest.create_index([("state", ASCENDING), ("queue", ASCENDING), ("requested_at", ASCENDING)])
        await self.latest.create_index([("state", ASCENDING), ("expires_at", ASCENDING)])
        await self.latest.create_index([("published", ASCENDING), ("state", ASCENDING)])
        await self.latest.create_index([("decided_at", ASCENDING)])

    @staticmethod
    def _row(approval: Approval) -> dict[str, Any]:
        return {
            "_id": approval.approval_id,
            "state": approval.state.value,
            "queue": approval.queue,
            "expires_at": approval.expires_at,
            "requested_at": approval.request.requested_at,
            "decided_at": approval.decided_at,
            "published": approval.published,
            "version": approval.version,
            "doc": to_doc(approval),
        }

    async def _insert_version(self, approval: Approval) -> bool:
        try:
            await self.versions.insert_one(
                {
                    "_id": version_id(approval.approval_id, approval.version),
                    "approval_id": approval.approval_id,
                    "version": approval.version,
                    "doc": to_doc(approval),
                }
            )
        except DuplicateKeyError:
            return False
        # The lists' copy: never replaced by an older version (a slower writer of an earlier change).
        await self.latest.replace_one(
            {"_id": approval.approval_id, "version": {"$lt": approval.version}}, self._row(approval), upsert=False
        )
        if approval.version == 1:
            with contextlib.suppress(DuplicateKeyError):  # a replica that lost the copy race: the copy is there
                await self.latest.insert_one(self._row(approval))
        return True

    async def add(self, approval: Approval) -> bool:
        if await self._insert_version(replace(approval, version=1)):
            return True
        await self.get(approval.approval_id)  # known already: repair its list copy, if a crash left none
        return False

    async def get(self, approval_id: str) -> Approval | None:
        doc = await self.versions.find_one({"approval_id": approval_id}, sort=[("version", DESCENDING)])
        if doc is None:
            return None
        newest = from_doc(doc["doc"])
        copy = await self.latest.find_one({"_id": approval_id}, {"version": 1})
        if copy is None:
            # A writer stopped between its version and the copy: bring the lists up to date.
            with contextlib.suppress(DuplicateKeyError):  # another reader repaired it first
                await self.latest.insert_one(self._row(newest))
        elif copy["version"] < newest.version:
            # Never backwards: only a copy older than what this reader saw is replaced.
            await self.latest.replace_one({"_id": approval_id, "version": {"$lt": newest.version}}, self._row(newest))
        return newest

    async def update(self, approval_id: str, change: ApprovalChange[T]) -> T:
        async with self._locks.hold(approval_id):
            for attempt in range(self.max_tries):
                current = await self.get(approval_id)
                if current is None:
                    raise KeyError(approval_id)
                changed, result = change(current)
                if changed is None or await self._insert_version(replace(changed, version=current.version + 1)):
                    return result
                self.conflicts += 1
                await asyncio.sleep(self._random.uniform(0, min(_BACKOFF_CAP_S, 0.001 * 2 ** min(attempt, 6))))
        raise ApprovalConflictError(f"approval {approval_id} changed under every one of {self.max_tries} tries")

    async def _listed(self, query: dict[str, Any], sort: list[tuple[str, int]], limit: int) -> list[Approval]:
        cursor = self.latest.find(query, {"doc": 1}).sort(sort).limit(limit)
        return [from_doc(row["doc"]) async for row in cursor]

    async def pending(self, *, queue: str | None = None, limit: int = 500) -> list[Approval]:
        query: dict[str, Any] = {"state": _PENDING} | ({"queue": queue} if queue is not None else {})
        return await self._listed(query, [("requested_at", ASCENDING), ("_id", ASCENDING)], limit)

    async def due(self, now: float, *, limit: int = 500) -> list[Approval]:
        return await self._listed({"state": _PENDING, "expires_at": {"$lte": now}}, [("expires_at", ASCENDING)], limit)

    async def unpublished(self, *, limit: int = 500) -> list[Approval]:
        return await self._listed(
            {"published": False, "state": {"$ne": _PENDING}}, [("decided_at", ASCENDING), ("_id", ASCENDING)], limit
        )

    async def decided_since(self, since: float, *, limit: int = 10_000) -> list[Approval]:
        return await self._listed({"decided_at": {"$gte": since}}, [("decided_at", ASCENDING)], limit)

    async def close(self) -> None:
        """Close the client this store opened (not one it was given); closing again does nothing."""
        if self._own_client:
            self._own_client = False
            await self._client.close()
