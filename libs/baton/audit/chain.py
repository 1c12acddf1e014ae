"""Audit records and their two hash chains (per source partition, per workflow), with keyed MACs.

Pure: no store or broker imports. Every record's `hash` covers all its fields (including both
previous hashes), and `mac` is an HMAC of that hash under the auditor's key, so a record written
without the key is a forgery even when its chain links look right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from baton.bus.base import BusRecord
from baton.context import canonical_bytes
from baton.contracts.models import Event

Record = dict[str, Any]

_UNHASHED = ("hash", "mac", "_id")


def record_id(topic: str, partition: int, offset: int) -> str:
    """Where a record came from, which is also its identity in the store."""
    return f"{topic}/{partition}/{offset}"


def record_hash(record: Record) -> str:
    """SHA-256 of the canonical encoding of every field but hash and mac."""
    return hashlib.sha256(canonical_bytes({k: v for k, v in record.items() if k not in _UNHASHED})).hexdigest()


def record_mac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, document: Record) -> str:
    """HMAC-SHA256 over a document's canonical encoding (without its signature)."""
    body = canonical_bytes({k: v for k, v in document.items() if k not in ("signature", "_id")})
    return hmac.new(key, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Head:
    """The last link of a chain: its position (offset or workflow sequence) and hash."""

    position: int
    hash: str


def describe(record: BusRecord, event: Event | None, error: str | None) -> Record:
    """The audit content of one consumed message (before chaining)."""
    base: Record = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "raw_sha256": hashlib.sha256(record.value).hexdigest(),
    }
    if event is None:
        key = record.key.decode(errors="replace") if record.key else "unknown"
        return base | {
            "event_id": f"undecodable@{record_id(record.topic, record.partition, record.offset)}",
            "event_type": "Undecodable",
            "schema_version": 0,
            "workflow_id": key,
            "tenant_id": "unknown",
            "producer": "unknown",
            "occurred_at": None,
            "causation_id": None,
            "payload": {"raw_b64": base64.b64encode(record.value).decode(), "error": error or ""},
        }
    env = event.envelope
    return base | {
        "event_id": env.event_id,
        "event_type": event.event_type,
        "schema_version": env.schema_version,
        "workflow_id": env.workflow_id,
        "tenant_id": env.tenant_id,
        "producer": env.producer,
        "occurred_at": env.occurred_at.isoformat(),
        "causation_id": env.causation_id,
        "payload": event.model_dump(mode="json", exclude={"envelope"}),
    }


class AuditChain:
    """Links records into both chains; heads must be loaded from the store before appending."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.partitions: dict[tuple[str, int], Head] = {}
        self.workflows: dict[str, Head] = {}

    def link(self, content: Record, *, duplicate_of: str | None) -> Record:
        """Chain one described record and update the heads."""
        tp = (content["topic"], content["partition"])
        p_head = self.partitions.get(tp)
        w_head = self.workflows.get(content["workflow_id"])
        offset = content["offset"]
        record: Record = dict(content)
        if duplicate_of is not None:
            # The same event delivered again at another offset: kept (offsets stay continuous), marked.
            record["event_id"] = f"{duplicate_of}#dup@{record_id(tp[0], tp[1], offset)}"
        record["duplicate_of"] = duplicate_of
        record["partition_prev_hash"] = p_head.hash if p_head else None
        expected = p_head.position + 1 if p_head else 0
        record["gap_from"] = expected if offset != expected else None
        record["workflow_seq"] = (w_head.position + 1) if w_head else 1
        record["workflow_prev_hash"] = w_head.hash if w_head else None
        record["hash"] = record_hash(record)
        record["mac"] = record_mac(self.key, record["hash"])
        self.partitions[tp] = Head(offset, record["hash"])
        self.workflows[content["workflow_id"]] = Head(record["workflow_seq"], record["hash"])
        return record
