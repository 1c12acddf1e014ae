"""`baton audit verify`: stream the store and check every hash, chain link, offset and signed anchor.

What is trusted is the auditor's Ed25519 public key and the anchors it signed: each anchor names a
partition chain's head (offset and hash), and each record's hash covers the one before it, so a
verified anchor authenticates its partition up to that offset. A record no verified anchor reaches
is unauthenticated (forged, re-chained, or newer than the last anchor) and fails verification.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from baton.audit.anchors import signature_problem
from baton.audit.chain import Record, hash_matches, record_hash, record_id
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.store import AuditStore

_MAX_PROBLEMS = 50


@dataclass
class VerifyReport:
    """What verification found; `problems[0]` names the first bad record."""

    records: int = 0
    partitions: int = 0
    workflows: int = 0
    anchors: int = 0
    log_records: int = 0
    problems: list[str] = field(default_factory=list)
    # Per partition, the highest offset a verified anchor covers (the newest anchor).
    anchored: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)


def _where(doc: Record) -> str:
    return (
        f"record {record_id(doc.get('topic', '?'), doc.get('partition', -1), doc.get('offset', -1))} "
        f"(event {doc.get('event_id', '?')})"
    )


def offset_ranges(offsets: Sequence[int]) -> str:
    """Sorted offsets as ranges: `3, 7-9`."""
    parts: list[str] = []
    start = prev = None
    for offset in offsets:
        if start is not None and prev is not None and offset == prev + 1:
            prev = offset
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = offset
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def check_anchors(
    anchors: Sequence[Record], public_key: Ed25519PublicKey, report: VerifyReport
) -> dict[tuple[str, int], dict[int, str]]:
    """The offsets and hashes verified anchors claim, per partition; a problem for each that does not verify."""
    claims: dict[tuple[str, int], dict[int, str]] = {}
    for anchor in anchors:
        report.anchors += 1
        problem = signature_problem(anchor, public_key)
        if problem is not None:
            report.add(problem)
            continue
        tp = (str(anchor["topic"]), int(anchor["partition"]))
        offset = int(anchor["offset"])
        known = claims.setdefault(tp, {}).get(offset)
        if known is not None and known != anchor["hash"]:
            report.add(
                f"anchor {anchor['anchor_id']}: signed hash {anchor['hash']} for {tp[0]}/{tp[1]}@{offset}, "
                f"another signed anchor says {known}: the key signed two different logs"
            )
        claims[tp][offset] = str(anchor["hash"])
        report.anchored[tp] = max(offset, report.anchored.get(tp, -1))
    return claims


_PAYLOAD_MARK = b',"payload":'
_AFTER_PAYLOAD_MARK = b',"producer":'


def _fields_of(body: bytes, payload_at: int | None, payload_end: int | None) -> Record | None:
    """The record's top-level fields but its payload, parsed from its stored canonical bytes; None if
    they do not parse (then the bytes cannot be what the auditor wrote, which the hash check reports).

    Only the two small parts around the payload are parsed. The split points come from the store and
    are not trusted: the part before must end with `,"payload":` and the part after start with
    `,"producer":`, and both must parse as whole JSON objects, which holds only at the top level (a
    split inside the payload leaves a bracket open or one too many closed), so the fields read are
    the record's own. Anything else falls back to parsing the whole document.
    """
    if (
        payload_at is not None
        and payload_end is not None
        and len(_PAYLOAD_MARK) <= payload_at <= payload_end < len(body)
        and body.startswith(_PAYLOAD_MARK, payload_at - len(_PAYLOAD_MARK))
        and body.startswith(_AFTER_PAYLOAD_MARK, payload_end)
    ):
        head = _whole_object(body[: payload_at - len(_PAYLOAD_MARK)] + b"}")
        tail = _whole_object(b"{" + body[payload_end + 1 :])
        if head is not None and tail is not None:
            return head | tail
    try:
        whole = json.loads(body)
    except ValueError:
        return None
    return whole if isinstance(whole, dict) else None


# The C scanner json.loads runs, without its wrapper's encoding detection and whitespace skipping.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _whole_object(text: bytes) -> Record | None:
    """The JSON object that is exactly this text (no whitespace around: canonical bytes have none), or None."""
    try:
        decoded = text.decode("utf-8")
        value, end = _SCAN(decoded, 0)
    except (ValueError, StopIteration):
        return None
    return value if end == len(decoded) and isinstance(value, dict) else None


async def verify_store(
    store: AuditStore, public_key: Ed25519PublicKey, *, anchors: Sequence[Record] | None = None
) -> VerifyReport:
    """Check the whole store in two streaming passes (by partition, then by workflow).

    anchors: the signed anchors to trust, read from outside the store (the anchors topic, the anchor
    file); None reads the store's own, which an attacker who cuts the store can cut with it.
    """
    report = VerifyReport()
    if anchors is None:
        anchors = [a async for a in store.anchors()]
    claims = check_anchors(anchors, public_key, report)

    seen_ids: set[bytes] = set()
    prev: Record | None = None
    pending: dict[int, str] = {}
    last_tp: tuple[str, int] | None = None

    def close_partition(tp: tuple[str, int], last_offset: int) -> None:
        within = sorted(offset for offset in pending if offset <= last_offset)
        if within:
            report.add(
                f"partition {tp[0]}/{tp[1]}: signed anchors cover offsets {offset_ranges(within)} but the store "
                "holds no record there: deleted (and the chain re-linked over the hole)"
            )
        beyond = [offset for offset in pending if offset > last_offset]
        if beyond:
            report.add(
                f"partition {tp[0]}/{tp[1]}: a signed anchor covers offset {max(beyond)} but the store ends "
                f"at offset {last_offset}: records {last_offset + 1}-{max(beyond)} were cut off the tail"
            )
        covered = report.anchored.get(tp)
        if covered is None:
            report.add(
                f"partition {tp[0]}/{tp[1]}: no signed anchor covers any of its records (up to offset "
                f"{last_offset}): forged, re-chained with another key, or the anchors are missing"
            )
        elif covered < last_offset:
            report.add(
                f"partition {tp[0]}/{tp[1]}: records {covered + 1}-{last_offset} follow the newest signed anchor "
                f"(offset {covered}): unauthenticated, appended without the key (or the auditor stopped before "
                "anchoring them; a running auditor anchors after BATON_AUDITOR_ANCHOR_IDLE_S without traffic)"
            )

    def check(doc: Record, intact: bool) -> None:
        nonlocal prev, pending, last_tp
        report.records += 1
        tp = (doc.get("topic"), doc.get("partition"))
        if tp != last_tp:
            if last_tp is not None and prev is not None:
                close_partition(last_tp, prev["offset"])
            last_tp, prev = tp, None  # type: ignore[assignment]
            pending = dict(claims.pop(tp, {}))  # type: ignore[arg-type]
            report.partitions += 1
        rid = doc.get("_id")
        if rid is not None and rid != f"{tp[0]}/{tp[1]}/{doc['offset']}":
            report.add(f"{_where(doc)}: stored under id {rid}, not its position: moved or forged")
        if not intact:
            report.add(f"{_where(doc)}: content does not match its hash: the record was modified after it was written")
        event_digest = hashlib.sha1(str(doc.get("event_id")).encode()).digest()
        if event_digest in seen_ids:
            report.add(f"{_where(doc)}: event id appears twice")
        seen_ids.add(event_digest)
        if prev is None:
            if doc.get("partition_prev_hash") is not None or (doc["offset"] != 0 and doc.get("gap_from") is None):
                report.add(
                    f"{_where(doc)}: the partition's first stored record does not start its chain "
                    f"(offset {doc['offset']}): earlier records are missing"
                )
        else:
            if doc["offset"] == prev["offset"]:
                report.add(f"{_where(doc)}: offset {doc['offset']} appears twice")
            elif doc["offset"] != prev["offset"] + 1 and doc.get("gap_from") != prev["offset"] + 1:
                report.add(
                    f"{_where(doc)}: offsets jump from {prev['offset']} to {doc['offset']}: "
                    f"{doc['offset'] - prev['offset'] - 1} record(s) missing or reordered"
                )
            elif doc.get("partition_prev_hash") != prev.get("hash"):
                report.add(f"{_where(doc)}: does not link to the record before it (partition chain broken)")
        expected = pending.pop(doc["offset"], None)
        if expected is not None and expected != doc.get("hash"):
            report.add(
                f"{_where(doc)}: differs from the hash a signed anchor recorded for this offset: "
                "rewritten (re-chained) after it was anchored"
            )
        prev = doc

    fast = isinstance(store, SqliteAuditStore)
    if isinstance(store, SqliteAuditStore):
        # The stored bytes are what the hash covers: hash them as they are, parse only the chain fields.
        async for rows in store.verification_pages():
            for rid, stored_hash, body, payload_at, payload_end, wf_id, wf_seq, wf_prev in rows:
                doc: Record | None
                if stored_hash is None:  # written before the bytes were stored as hashed: the slow way
                    doc = _fields_of(body, None, None)
                    intact = doc is not None and record_hash(doc) == doc.get("hash")
                else:
                    intact = hashlib.sha256(body).hexdigest() == stored_hash
                    doc = _fields_of(body, payload_at, payload_end)
                    if doc is not None:
                        doc["hash"] = stored_hash
                if doc is None or not isinstance(doc.get("offset"), int):
                    report.records += 1
                    report.add(f"record {rid}: its stored bytes are not an audit record: modified or forged")
                    continue
                doc["_id"] = rid
                # The workflow pass reads these columns: they must say what the hashed bytes say.
                if (doc.get("workflow_id"), doc.get("workflow_seq"), doc.get("workflow_prev_hash")) != (
                    wf_id,
                    wf_seq,
                    wf_prev,
                ):
                    report.add(f"{_where(doc)}: its workflow columns differ from its hashed content: modified")
                check(doc, intact)
    else:
        async for doc in store.stream():
            check(doc, hash_matches(doc))
    if last_tp is not None and prev is not None:
        close_partition(last_tp, prev["offset"])
    for tp, offsets in sorted(claims.items()):
        report.add(
            f"partition {tp[0]}/{tp[1]}: signed anchors cover offsets up to {max(offsets)} but no record "
            f"of this partition is stored: records 0-{max(offsets)} were deleted"
        )

    if fast:
        assert isinstance(store, SqliteAuditStore)
        last: tuple[str, int, str | None] | None = None  # workflow id, sequence, hash
        async for link_rows in store.workflow_link_pages():
            for rid, event_id, wf_id, wf_seq, wf_prev, wf_hash in link_rows:
                if last is None or last[0] != wf_id:
                    report.workflows += 1
                problem = _link_problem(rid, event_id, last, wf_id, wf_seq, wf_prev)
                if problem is not None:
                    report.add(problem)
                last = (wf_id, wf_seq, wf_hash)
    else:
        previous: tuple[str, int, str | None] | None = None
        async for doc in store.stream_by_workflow():
            position = record_id(doc.get("topic", "?"), doc.get("partition", -1), doc.get("offset", -1))
            seq: Any = doc.get("workflow_seq")
            if previous is None or previous[0] != doc["workflow_id"]:
                report.workflows += 1
            problem = _link_problem(
                position, doc.get("event_id", "?"), previous, doc["workflow_id"], seq, doc.get("workflow_prev_hash")
            )
            if problem is not None:
                report.add(problem)
            previous = (doc["workflow_id"], seq, doc.get("hash"))
    return report


def _link_problem(
    position: str,
    event_id: Any,
    previous: tuple[str, int, str | None] | None,
    workflow_id: str,
    seq: Any,
    prev_hash: str | None,
) -> str | None:
    """What is wrong with one record's link to the one before it in its workflow's chain (previous: that
    record's workflow id, sequence and hash, None for the first record of the workflow), if anything."""
    if previous is None or previous[0] != workflow_id:
        if seq != 1 or prev_hash is not None:
            return (
                f"record {position} (event {event_id}): workflow {workflow_id} starts at sequence {seq}: "
                "its first records are missing"
            )
        return None
    if seq != previous[1] + 1:
        return (
            f"record {position} (event {event_id}): workflow {workflow_id} jumps from sequence {previous[1]} to {seq}"
        )
    if prev_hash != previous[2]:
        return (
            f"record {position} (event {event_id}): does not link to the workflow's previous record "
            "(workflow chain broken)"
        )
    return None
