"""`baton audit verify`: stream the store and check every hash, MAC, chain link, offset and anchor."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from baton.audit.chain import Record, record_hash, record_id, record_mac, sign
from baton.audit.store import AuditStore

_MAX_PROBLEMS = 50


@dataclass
class VerifyReport:
    """What verification found; `problems[0]` names the first bad record."""

    records: int = 0
    partitions: int = 0
    workflows: int = 0
    anchors: int = 0
    problems: list[str] = field(default_factory=list)

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


async def verify_store(store: AuditStore, key: bytes) -> VerifyReport:
    """Check the whole store in two streaming passes (by partition, then by workflow)."""
    report = VerifyReport()
    claims: dict[tuple[str, int], dict[int, str]] = {}
    async for anchor in store.anchors():
        report.anchors += 1
        if not hmac.compare_digest(sign(key, anchor), str(anchor.get("signature", ""))):
            report.add(
                f"anchor {anchor.get('anchor_id')}: signature does not match: the anchor was altered or "
                "forged (or verify runs with another key than the auditor)"
            )
            continue
        for head in anchor.get("heads", []):
            claims.setdefault((head["topic"], int(head["partition"])), {})[int(head["offset"])] = head["hash"]

    seen_ids: set[bytes] = set()
    prev: Record | None = None
    pending: dict[int, str] = {}
    last_tp: tuple[str, int] | None = None

    def close_partition(tp: tuple[str, int], last_offset: int) -> None:
        beyond = [offset for offset in pending if offset > last_offset]
        if beyond:
            report.add(
                f"partition {tp[0]}/{tp[1]}: a signed anchor recorded offset {max(beyond)} but the log ends "
                f"at offset {last_offset}: records were cut off the tail"
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
        digest = record_hash(doc)
        if digest != doc.get("hash"):
            report.add(f"{where}: content does not match its hash: the record was modified after it was written")
        elif not hmac.compare_digest(record_mac(key, digest), str(doc.get("mac", ""))):
            report.add(f"{where}: MAC does not match: the record was not written by the auditor (forged)")
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
            report.add(f"{where}: differs from the hash a signed anchor recorded for this offset")
        prev = doc
    if last_tp is not None and prev is not None:
        close_partition(last_tp, prev["offset"])
    for tp, offsets in claims.items():
        report.add(
            f"partition {tp[0]}/{tp[1]}: signed anchors recorded offsets up to {max(offsets)} but no record "
            "of this partition is stored: the log was cut"
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
