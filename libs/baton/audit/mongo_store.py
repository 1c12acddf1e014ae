"""MongoDB audit store over pymongo's native async client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from baton.audit.chain import Head, Record
from baton.audit.store import DuplicateRecordError

# The role an auditor needs, and no more: insert and read, never update or delete.
AUDITOR_ROLE: dict[str, Any] = {
    "createRole": "batonAuditor",
    "privileges": [
        {"resource": {"db": "baton", "collection": "audit_records"}, "actions": ["find", "insert", "createIndex"]},
        {"resource": {"db": "baton", "collection": "audit_anchors"}, "actions": ["find", "insert", "createIndex"]},
    ],
    "roles": [],
}


# A payload whose keys a MongoDB server refuses is stored as JSON text under this field instead.
_PAYLOAD_AS_JSON = "payload_json"
_DUPLICATE_KEY = 11000
_PAGE = 5000


def _keys_storable(value: Any) -> bool:
    """Whether every object key in a JSON value is one MongoDB stores: no '.', no leading '$', no NUL."""
    if isinstance(value, dict):
        return all(
            "." not in k and not k.startswith("$") and "\x00" not in k and _keys_storable(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return all(_keys_storable(v) for v in value)
    return True


def stored_document(record: Record) -> Record:
    """The document to insert: the record, with its payload as JSON text when its keys cannot be field names.

    Event payloads hold maps with arbitrary keys (a TaskRequested's labels, e.g. `app.kubernetes.io/name`);
    refusing one would stop the auditor on that record forever.
    """
    doc = dict(record)
    if not _keys_storable(doc.get("payload")):
        doc[_PAYLOAD_AS_JSON] = json.dumps(doc.pop("payload"))
    return doc


def _loaded(doc: Record) -> Record:
    """The record as the auditor wrote it."""
    text = doc.pop(_PAYLOAD_AS_JSON, None)
    if text is not None:
        doc["payload"] = json.loads(text)
    return doc


async def create_record_indexes(collection: AsyncCollection[Record]) -> None:
    """The indexes of audit_records: unique event id and source position, and the workflow chains."""
    await collection.create_index([("event_id", ASCENDING)], unique=True, name="event_id_unique")
    await collection.create_index(
        [("topic", ASCENDING), ("partition", ASCENDING), ("offset", ASCENDING)], unique=True, name="by_position"
    )
    await collection.create_index([("workflow_id", ASCENDING), ("workflow_seq", ASCENDING)], name="by_workflow")


class MongoAuditStore:
    """Records in `audit_records` (_id = topic/partition/offset), anchors in `audit_anchors`."""

    def __init__(
        self,
        url: str,
        *,
        database: str = "baton",
        write_concern: str | int = "majority",
        journal: bool = True,
        client: AsyncMongoClient[Record] | None = None,
    ) -> None:
        self._client: AsyncMongoClient[Record] = client or AsyncMongoClient(url, tz_aware=True)
        concern = WriteConcern(w=write_concern, j=journal)
        db = self._client.get_database(database, write_concern=concern)
        self.records = db.get_collection("audit_records")
        self.anchors_collection = db.get_collection("audit_anchors")

    async def setup(self) -> None:
        await create_record_indexes(self.records)

    async def exists(self) -> bool:
        names = await self.records.database.list_collection_names(filter={"name": "audit_records"})
        return "audit_records" in names

    async def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        try:
            await self.records.insert_many([stored_document(r) for r in records], ordered=True)
        except DuplicateKeyError as exc:
            raise DuplicateRecordError(str(exc)[:500]) from exc
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if errors and all(e.get("code") == _DUPLICATE_KEY for e in errors):
                raise DuplicateRecordError(str(exc)[:500]) from exc
            raise

    async def head_at(self, record_id: str) -> Head | None:
        doc = await self.records.find_one({"_id": record_id}, {"offset": 1, "hash": 1})
        return Head(doc["offset"], doc["hash"]) if doc else None

    async def last_of_partition(self, topic: str, partition: int) -> Head | None:
        doc = await self.records.find_one(
            {"topic": topic, "partition": partition}, {"offset": 1, "hash": 1}, sort=[("offset", DESCENDING)]
        )
        return Head(doc["offset"], doc["hash"]) if doc else None

    async def workflow_heads(self, workflow_ids: Sequence[str]) -> dict[str, Head]:
        # One query for the batch's unknown workflows, reduced here ($group accumulators differ
        # between MongoDB-compatible servers); served by the (workflow_id, workflow_seq) index.
        heads: dict[str, Head] = {}
        if not workflow_ids:
            return heads
        query = {"workflow_id": {"$in": list(workflow_ids)}}
        async for doc in self.records.find(query, {"workflow_id": 1, "workflow_seq": 1, "hash": 1}):
            known = heads.get(doc["workflow_id"])
            if known is None or doc["workflow_seq"] > known.position:
                heads[doc["workflow_id"]] = Head(doc["workflow_seq"], doc["hash"])
        return heads

    async def chain_links(self) -> AsyncIterator[list[tuple[str, int, str, str, int]]]:
        fields = {"_id": 0, "workflow_id": 1, "workflow_seq": 1, "hash": 1, "topic": 1, "partition": 1}
        cursor = self.records.find({}, fields).sort([("workflow_id", ASCENDING), ("workflow_seq", ASCENDING)])
        page: list[tuple[str, int, str, str, int]] = []
        async for doc in cursor.batch_size(_PAGE):
            page.append((doc["workflow_id"], doc["workflow_seq"], doc["hash"], doc["topic"], doc["partition"]))
            if len(page) >= _PAGE:
                yield page
                page = []
        if page:
            yield page

    async def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        cursor = self.records.find({"event_id": {"$in": list(event_ids)}}, {"event_id": 1})
        return {doc["event_id"] async for doc in cursor}

    async def write_anchors(self, anchors: Sequence[Record]) -> None:
        if anchors:
            await self.anchors_collection.insert_many([dict(a, _id=a["anchor_id"]) for a in anchors], ordered=True)

    async def stream(self) -> AsyncIterator[Record]:
        cursor = self.records.find({}).sort([("topic", ASCENDING), ("partition", ASCENDING), ("offset", ASCENDING)])
        async for doc in cursor.batch_size(_PAGE):
            yield _loaded(doc)

    async def stream_by_workflow(self, workflow_id: str | None = None) -> AsyncIterator[Record]:
        query = {} if workflow_id is None else {"workflow_id": workflow_id}
        cursor = self.records.find(query).sort([("workflow_id", ASCENDING), ("workflow_seq", ASCENDING)])
        async for doc in cursor.batch_size(_PAGE):
            yield _loaded(doc)

    async def anchors(self) -> AsyncIterator[Record]:
        async for doc in self.anchors_collection.find({}).sort([("created_at", ASCENDING), ("_id", ASCENDING)]):
            doc.pop("_id", None)
            yield doc

    async def count(self) -> int:
        return int(await self.records.count_documents({}))

    async def close(self) -> None:
        await self._client.close()
