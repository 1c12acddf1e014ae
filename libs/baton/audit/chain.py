"""Audit records and their two hash chains (per source partition, per workflow).

Pure: no store or broker imports. Every record's `hash` covers all its fields, including both
previous hashes, so a partition chain's head authenticates every record before it: the auditor
signs heads (baton.audit.anchors), not records. Records carry no per-record MAC any more: an HMAC
needs the secret to check it, so whoever can verify it can forge it; a record written without the
key is caught because no signed head leads to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_jsonable_python

from baton.bus.base import BusRecord
from baton.context import canonical_bytes
from baton.contracts.models import Event

Record = dict[str, Any]

# `mac`: stores written before anchors were signed hold a per-record HMAC, never part of the hash.
_UNHASHED = ("hash", "mac", "_id")

UNDECODABLE = "Undecodable"
# Undecodable messages are chained under their key with this prefix, never in a decoded workflow's own
# chain: a key is unauthenticated bytes, and a workflow's lineage holds only events that decoded as its.
UNDECODABLE_WORKFLOW_PREFIX = "undecodable:"
NO_KEY_WORKFLOW = "undecodable"
_MAX_KEY_CHARS = 200
_MAX_ERROR_CHARS = 4000


def record_id(topic: str, partition: int, offset: int) -> str:
    """Where a record came from, which is also its identity in the store."""
    return f"{topic}/{partition}/{offset}"


def record_body(record: Record) -> bytes:
    """The bytes a record's hash covers: the canonical encoding of every field but hash (and a legacy mac)."""
    return canonical_bytes({k: v for k, v in record.items() if k not in _UNHASHED})


def _plain_json(value: Any) -> bytes:
    """Python's JSON in RFC 8785's layout: the canonical bytes whenever canonical_bytes takes its own fast path."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


_SCALAR_TYPES = frozenset({str, int, bool, type(None)})
# An integer of 16 digits or more may lie beyond 2^53, where the encodings differ: such records take the slow
# path. In the JSON of plain scalars a number follows `":`; inside a string the same bytes only cost a detour.
_LONG_NUMBER = re.compile(rb'":-?[0-9]{16}')


def _plain_scalars(record: Record) -> bytes | None:
    """Python's JSON of every field but the payload when that is their canonical encoding (ASCII keys and
    strings, integers below 2^53, null, booleans), else None."""
    scalars = {k: v for k, v in record.items() if k != "payload" and k not in _UNHASHED}
    if not set(map(type, scalars.values())) <= _SCALAR_TYPES:
        return None
    encoded = _plain_json(scalars)
    return encoded if encoded.isascii() and not _LONG_NUMBER.search(encoded) else None


def _spliced_body(scalars: bytes, payload: bytes) -> bytes:
    """record_body from _plain_scalars's bytes and the payload's canonical encoding: the payload put in its
    sorted place. In a flat object of scalars `,"key":` occurs only where that key starts (inside a string
    every quote is escaped), and ASCII keys sort alike in code points and UTF-16 units."""
    if scalars == b"{}":
        return b'{"payload":' + payload + b"}"
    keys = _KEY.findall(scalars)
    later = [k for k in keys if k > b"payload"]
    if not later:
        return scalars[:-1] + b',"payload":' + payload + b"}"
    if len(later) == len(keys):
        return b'{"payload":' + payload + b"," + scalars[1:]
    at = scalars.index(b',"' + min(later) + b'":')
    return scalars[:at] + b',"payload":' + payload + scalars[at:]


# Where a key starts in a flat object of scalars: after `{` or `,` (neither precedes a quote in a string).
_KEY = re.compile(rb'[{,]"([^"\\]*)":')


def hash_matches(record: Record) -> bool:
    """Whether record_hash(record) is the record's stored hash, cheaply: Python's JSON of the record hashing
    to it proves those bytes are the canonical encoding (the hash is SHA-256 of that); else the canonical
    encoding decides."""
    stored = record.get("hash")
    fields = {k: v for k, v in record.items() if k not in _UNHASHED}
    try:
        if hashlib.sha256(_plain_json(fields)).hexdigest() == stored:
            return True
    except (TypeError, ValueError):
        pass
    try:
        return hashlib.sha256(canonical_bytes(fields)).hexdigest() == stored
    except ValueError:  # no canonical encoding: not what the auditor wrote
        return False


def stored_body(record: Record) -> bytes:
    """record_body of a chained record, cheaply: its plain JSON when that hashes to the record's hash
    (then it is the canonical encoding), the canonical encoding otherwise."""
    fields = {k: v for k, v in record.items() if k not in _UNHASHED}
    try:
        plain = _plain_json(fields)
        if hashlib.sha256(plain).hexdigest() == record.get("hash"):
            return plain
    except (TypeError, ValueError):
        pass
    return canonical_bytes(fields)


def record_hash(record: Record) -> str:
    """SHA-256 of record_body."""
    return hashlib.sha256(record_body(record)).hexdigest()


def duplicate_event_id(event_id: str, position: str, attempt: int = 0) -> str:
    """The id of an event delivered again at another position: kept (offsets stay continuous), marked.

    attempt > 0 when that id is taken already, which only an event that chose such an id can cause.
    """
    return f"{event_id}#dup@{position}" + (f"#{attempt}" if attempt else "")


@dataclass(frozen=True)
class Head:
    """The last link of a chain: its position (offset or workflow sequence) and hash."""

    position: int
    hash: str


def undecodable_workflow_id(key: bytes | None) -> str:
    """The chain an undecodable message joins: its key as text (hashed when not short and printable), prefixed."""
    if key is None:
        return NO_KEY_WORKFLOW
    text = unicodedata.normalize("NFC", key.decode("utf-8", errors="replace"))
    if len(text) > _MAX_KEY_CHARS or not text.isprintable():
        text = "sha256:" + hashlib.sha256(key).hexdigest()
    return UNDECODABLE_WORKFLOW_PREFIX + text


def _bytes_as_base64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _bytes_as_base64(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bytes_as_base64(v) for v in value]
    return value


def event_payload(event: Event) -> Any:
    """An event's fields but the envelope as JSON values: bytes as standard base64, the rest as pydantic's JSON."""
    return to_jsonable_python(_bytes_as_base64(event.model_dump(mode="python", exclude={"envelope"})))


def _text(value: str, limit: int) -> str:
    """A string any store and the canonical encoding accept: no lone surrogates, at most limit characters."""
    clean = value.encode("utf-8", errors="replace").decode("utf-8")
    return clean if len(clean) <= limit else f"{clean[:limit]}… ({len(clean) - limit} more characters)"


def describe(record: BusRecord, event: Event | None, error: str | None) -> Record:
    """The audit content of one consumed message (before chaining); never raises.

    An event that decoded but has no canonical JSON description (a NaN, an integer beyond
    2^53, ...) is recorded as undecodable, with the reason, like bytes that did not decode.
    """
    return describe_plain(record, event, error)[0]


def describe_plain(record: BusRecord, event: Event | None, error: str | None) -> tuple[Record, bytes | None]:
    """describe, and the canonical encoding of the content's payload when every other field is a plain scalar
    (then AuditChain.link encodes the record without encoding the payload again), else None."""
    if event is not None:
        try:
            content = _describe_event(record, event)
            # What record_hash will encode: refuse it here, not in the chain.
            payload = canonical_bytes(content["payload"])
            if _plain_scalars(content) is None:
                canonical_bytes(content)
            return content, payload
        except Exception as exc:
            error = (
                f"UNDESCRIBABLE: decoded as {type(event).__name__} but has no canonical JSON description: "
                f"{type(exc).__name__}: {exc}"
            )
    content = _describe_undecodable(record, error or "UNKNOWN: no decoded event and no error given")
    return content, None


def _source(record: BusRecord) -> Record:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "raw_sha256": hashlib.sha256(record.value).hexdigest(),
    }


def _describe_event(record: BusRecord, event: Event) -> Record:
    env = event.envelope
    return _source(record) | {
        "event_id": env.event_id,
        "event_type": event.event_type,
        "schema_version": env.schema_version,
        "workflow_id": env.workflow_id,
        "tenant_id": env.tenant_id,
        "producer": env.producer,
        "occurred_at": env.occurred_at.isoformat(),
        "causation_id": env.causation_id,
        "payload": event_payload(event),
    }


def _describe_undecodable(record: BusRecord, error: str) -> Record:
    key = None if record.key is None else bytes(record.key)
    return _source(record) | {
        "event_id": f"undecodable@{record_id(record.topic, record.partition, record.offset)}",
        "event_type": UNDECODABLE,
        "schema_version": 0,
        "workflow_id": undecodable_workflow_id(key),
        "tenant_id": "unknown",
        "producer": "unknown",
        "occurred_at": None,
        "causation_id": None,
        "payload": {
            "raw_b64": base64.b64encode(record.value).decode("ascii"),
            "key_b64": None if key is None else base64.b64encode(key).decode("ascii"),
            "error": _text(error, _MAX_ERROR_CHARS),
        },
    }


class AuditChain:
    """Links records into both chains; heads must be loaded from the store before appending.

    `workflows` is kept in least-recently-linked order (a dict's insertion order), so the oldest
    entry is the first to evict.
    """

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], Head] = {}
        self.workflows: dict[str, Head] = {}

    def link(self, content: Record, *, duplicate_of: str | None, payload: bytes | None = None) -> Record:
        """Chain one described record and update the heads (a duplicate's content carries its own id).

        payload: the canonical encoding of content["payload"] (describe_plain); when every other field is a
        plain scalar, the record is hashed without encoding its payload again.
        """
        tp = (content["topic"], content["partition"])
        p_head = self.partitions.get(tp)
        w_head = self.workflows.get(content["workflow_id"])
        offset = content["offset"]
        record: Record = dict(content)
        record["duplicate_of"] = duplicate_of
        record["partition_prev_hash"] = p_head.hash if p_head else None
        expected = p_head.position + 1 if p_head else 0
        record["gap_from"] = expected if offset != expected else None
        record["workflow_seq"] = (w_head.position + 1) if w_head else 1
        record["workflow_prev_hash"] = w_head.hash if w_head else None
        scalars = _plain_scalars(record) if payload is not None else None
        if payload is not None and scalars is not None:
            record["hash"] = hashlib.sha256(_spliced_body(scalars, payload)).hexdigest()
        else:
            record["hash"] = record_hash(record)
        self.partitions[tp] = Head(offset, record["hash"])
        self.workflows.pop(content["workflow_id"], None)
        self.workflows[content["workflow_id"]] = Head(record["workflow_seq"], record["hash"])
        return record
