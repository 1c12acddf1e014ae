"""`baton audit verify`: stream the store and check every hash, chain link, offset and signed anchor.

What is trusted is the auditor's Ed25519 public key and the anchors it signed: each anchor names a
partition chain's head (offset and hash), and each record's hash covers the one before it, so a
verified anchor authenticates its partition up to that offset. A record no verified anchor reaches
is unauthenticated (forged, re-chained, or newer than the last anchor) and fails verification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from baton.audit.anchors import signature_problem
from baton.audit.chain import Record, record_hash, record_id
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

    async for doc in store.stream():
        report.records += 1
        tp = (doc["topic"], doc["partition"])
        if tp != last_tp:
            if last_tp is not None and prev is not None:
                close_partition(last_tp, prev["offset"])
            last_tp, prev = tp, None
            pending = dict(claims.pop(tp, {}))
            report.partitions += 1
        where = _where(doc)
        if doc.get("_id") not in (None, record_id(tp[0], tp[1], doc["offset"])):
            report.add(f"{where}: stored under id {doc.get('_id')}, not its position: moved or forged")
        if record_hash(doc) != doc.get("hash"):
            report.add(f"{where}: content does not match its hash: the record was modified after it was written")
        event_digest = hashlib.sha1(str(doc.get("event_id")).encode()).digest()
        if event_digest in seen_ids:
            report.add(f"{where}: event id appears twice")
        seen_ids.add(event_digest)
        if prev is None:
            if doc.get("partition_prev_hash") is not None or (doc["offset"] != 0 and doc.get("gap_from") is None):
                report.add(
                    f"{where}: the partition's first stored record does not start its chain "
                    f"(offset {doc['offset']}): earlier records are missing"
                )
        else:
            if doc["offset"] == prev["offset"]:
                report.add(f"{where}: offset {doc['offset']} appears twice")
            elif doc["offset"] != prev["offset"] + 1 and doc.get("gap_from") != prev["offset"] + 1:
                report.add(
                    f"{where}: offsets jump from {prev['offset']} to {doc['offset']}: "
                    f"{doc['offset'] - prev['offset'] - 1} record(s) missing or reordered"
                )
            elif doc.get("partition_prev_hash") != prev.get("hash"):
                report.add(f"{where}: does not link to the record before it (partition chain broken)")
        expected = pending.pop(doc["offset"], None)
        if expected is not None and expected != doc.get("hash"):
            report.add(
                f"{where}: differs from the hash a signed anchor recorded for this offset: "
                "rewritten (re-chained) after it was anchored"
            )
        prev = doc
    if last_tp is not None and prev is not None:
        close_partition(last_tp, prev["offset"])
    for tp, offsets in sorted(claims.items()):
        report.add(
            f"partition {tp[0]}/{tp[1]}: signed anchors cover offsets up to {max(offsets)} but no record "
            f"of this partition is stored: records 0-{max(offsets)} were deleted"
        )

    wf_prev: Record | None = None
    async for doc in store.stream_by_workflow():
        if wf_prev is None or wf_prev["workflow_id"] != doc["workflow_id"]:
            report.workflows += 1
            if doc.get("workflow_seq") != 1 or doc.get("workflow_prev_hash") is not None:
                report.add(
                    f"{_where(doc)}: workflow {doc['workflow_id']} starts at sequence "
                    f"{doc.get('workflow_seq')}: its first records are missing"
                )
        elif doc.get("workflow_seq") != wf_prev["workflow_seq"] + 1:
            report.add(
                f"{_where(doc)}: workflow {doc['workflow_id']} jumps from sequence {wf_prev['workflow_seq']} "
                f"to {doc.get('workflow_seq')}"
            )
        elif doc.get("workflow_prev_hash") != wf_prev.get("hash"):
            report.add(f"{_where(doc)}: does not link to the workflow's previous record (workflow chain broken)")
        wf_prev = doc
    return report
