"""Signed anchors: Ed25519 statements "partition P's chain ends at offset O with hash H", kept outside the store.

An anchor covers one source partition, so the compacted anchors topic (keyed by partition) keeps the
newest for every partition however many auditors wrote them. Signing a chain head authenticates every
record before it, because each record's hash covers the hash of the one before it.

Anchors are plain canonical JSON, not Avro events: a verifier needs only the public key and this
module, not the schema registry, and the auditor does not audit its own anchors (no feedback loop).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from baton import topics
from baton.audit.chain import Head, Record
from baton.audit.keys import key_id
from baton.audit.store import AuditStore
from baton.bus.base import Bus, BusRecord
from baton.context import canonical_bytes

ANCHOR_FORMAT = 1


def anchor_body(anchor: Record) -> bytes:
    """What the signature covers: the anchor's canonical encoding without its signature."""
    return canonical_bytes({k: v for k, v in anchor.items() if k not in ("signature", "_id")})


def make_anchors(
    heads: Mapping[tuple[str, int], Head], *, key: Ed25519PrivateKey, auditor_id: str, records_appended: int
) -> list[Record]:
    """One signed anchor per partition head, all of one batch."""
    batch = str(uuid.uuid4())
    created_at = datetime.now(UTC).isoformat()
    kid = key_id(key.public_key())
    out: list[Record] = []
    for (topic, partition), head in sorted(heads.items()):
        anchor: Record = {
            "format": ANCHOR_FORMAT,
            "anchor_id": f"{batch}/{topic}/{partition}",
            "batch": batch,
            "auditor": auditor_id,
            "created_at": created_at,
            "records_appended": records_appended,
            "key_id": kid,
            "topic": topic,
            "partition": partition,
            "offset": head.position,
            "hash": head.hash,
        }
        anchor["signature"] = base64.b64encode(key.sign(anchor_body(anchor))).decode("ascii")
        out.append(anchor)
    return out


def signature_problem(anchor: Record, public_key: Ed25519PublicKey) -> str | None:
    """Why an anchor is not to be trusted under this public key, or None when its signature verifies."""
    where = f"anchor {anchor.get('anchor_id', '?')}"
    if not all(k in anchor for k in ("topic", "partition", "offset", "hash", "signature")):
        return f"{where}: not an anchor of format {ANCHOR_FORMAT} (fields missing): forged or from an older auditor"
    try:
        public_key.verify(base64.b64decode(str(anchor["signature"]), validate=True), anchor_body(anchor))
    except (InvalidSignature, ValueError):
        expected = key_id(public_key)
        other = anchor.get("key_id")
        why = (
            f"it names key {other}, not the configured public key {expected}: signed with another key"
            if other != expected
            else "altered or forged"
        )
        return f"{where} ({anchor['topic']}/{anchor['partition']}@{anchor['offset']}): signature does not verify: {why}"
    return None


class AnchorSink(Protocol):
    """Somewhere anchors are published; adapters: the store, the compacted bus topic, an append-only file."""

    async def publish(self, anchors: Sequence[Record]) -> None:
        """Publish every anchor durably, or raise."""
        ...


class StoreAnchorSink:
    """Anchors next to the records (convenient, but cut together with them: never the only sink)."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def publish(self, anchors: Sequence[Record]) -> None:
        if anchors:
            await self._store.write_anchors(anchors)


class BusAnchorSink:
    """Anchors on the compacted topic AUDIT_ANCHORS, keyed `topic/partition`: the newest per partition stays."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def publish(self, anchors: Sequence[Record]) -> None:
        for anchor in anchors:
            key = f"{anchor['topic']}/{anchor['partition']}".encode()
            await self._bus.publish(topics.AUDIT_ANCHORS, canonical_bytes(anchor), key=key)


class FileAnchorSink:
    """Anchors appended to a JSON-lines file, each line fsynced (point it at a WORM or replicated volume)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def publish(self, anchors: Sequence[Record]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as out:
            out.write(b"".join(canonical_bytes(a) + b"\n" for a in anchors))
            out.flush()
            os.fsync(out.fileno())


def _parsed(raw: bytes, where: str, malformed: list[str]) -> Record | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        malformed.append(f"{where}: not JSON: not an anchor")
        return None
    if not isinstance(doc, dict):
        malformed.append(f"{where}: not a JSON object: not an anchor")
        return None
    return doc


def read_anchor_file(path: Path, malformed: list[str]) -> list[Record]:
    """Every anchor in a JSON-lines file (lines that are not anchors go to malformed)."""
    out: list[Record] = []
    with path.open("rb") as lines:
        for n, line in enumerate(lines, start=1):
            if line.strip():
                doc = _parsed(line, f"{path}:{n}", malformed)
                if doc is not None:
                    out.append(doc)
    return out


async def read_anchor_topic(bus: Bus, malformed: list[str]) -> list[Record]:
    """Every anchor the anchors topic holds now."""
    out: list[Record] = []

    async def take(record: BusRecord) -> None:
        doc = _parsed(record.value, f"{record.topic}/{record.partition}@{record.offset}", malformed)
        if doc is not None:
            out.append(doc)

    await bus.replay([topics.AUDIT_ANCHORS], take)
    return out
