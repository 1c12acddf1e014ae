"""Handoff verification: integrity, truncation, staleness, completeness and context loss.

Pure domain logic with no broker imports; the validator service calls verify_handoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from baton.context import canonical_bytes, diff_contexts, load_context
from baton.contracts.models import (
    ContextDiff,
    ContextSnapshot,
    HandoffProposed,
    HandoffRejectionCode,
    WorkflowCheckpointed,
)

DEFAULT_MAX_CONTEXT_BYTES = 1_000_000


@dataclass(frozen=True)
class HandoffVerdict:
    """The outcome of verifying one proposal."""

    accepted: bool
    diff: ContextDiff | None = None
    code: HandoffRejectionCode | None = None
    reason: str = ""

    @classmethod
    def reject(cls, code: HandoffRejectionCode, reason: str) -> HandoffVerdict:
        return cls(accepted=False, code=code, reason=reason)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def verify_snapshot_integrity(
    snapshot: ContextSnapshot, *, max_bytes: int
) -> tuple[HandoffVerdict | None, dict[str, Any]]:
    """Size, truncation, parseability and hash of one snapshot; returns a rejection or the context."""
    raw = snapshot.context_json.encode("utf-8")
    if snapshot.size_bytes > max_bytes or len(raw) > max_bytes:
        return HandoffVerdict.reject(
            HandoffRejectionCode.OVERSIZED,
            f"context is {max(snapshot.size_bytes, len(raw))} bytes, over the {max_bytes}-byte limit: "
            "summarise or drop keys (declare them in summarised_keys / dropped_keys) before handing off",
        ), {}
    if len(raw) != snapshot.size_bytes:
        return HandoffVerdict.reject(
            HandoffRejectionCode.TRUNCATED,
            f"context declared {snapshot.size_bytes} bytes but {len(raw)} arrived: it was truncated or padded "
            "between the sender and the validator; the supervisor rebuilds it from the last checkpoint",
        ), {}
    try:
        context = load_context(snapshot)
    except (ValueError, json.JSONDecodeError) as exc:
        return HandoffVerdict.reject(
            HandoffRejectionCode.MALFORMED, f"context is not a JSON object ({exc}); the sender produced garbage"
        ), {}
    actual = hashlib.sha256(canonical_bytes(context)).hexdigest()
    if actual != snapshot.sha256:
        return HandoffVerdict.reject(
            HandoffRejectionCode.HASH_MISMATCH,
            f"context hashes to {actual[:16]}… but the sender declared {snapshot.sha256[:16]}…: "
            "it was altered after hashing; do not act on it",
        ), {}
    return None, context


def verify_handoff(
    proposal: HandoffProposed,
    *,
    checkpoint: ContextSnapshot | None,
    required_inputs: Sequence[str],
    max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
) -> HandoffVerdict:
    """Verify a proposed handoff against the workflow's last checkpoint and the target's declared inputs."""
    snap = proposal.snapshot
    rejection, after = verify_snapshot_integrity(snap, max_bytes=max_bytes)
    if rejection is not None:
        return rejection
    if checkpoint is None:
        return HandoffVerdict.reject(
            HandoffRejectionCode.STALE,
            f"no checkpoint is known for workflow {proposal.envelope.workflow_id}, so the proposal's parent "
            "cannot be checked; the supervisor must checkpoint before a step runs",
        )
    if snap.parent_sha256 != checkpoint.sha256 or snap.version != checkpoint.version + 1:
        return HandoffVerdict.reject(
            HandoffRejectionCode.STALE,
            f"proposal is version {snap.version} derived from {str(snap.parent_sha256)[:16]}…, but the last "
            f"checkpoint is version {checkpoint.version} ({checkpoint.sha256[:16]}…): the agent worked on an "
            "outdated context; the supervisor rebuilds from the last checkpoint",
        )
    missing = [f for f in required_inputs if f not in after or _empty(after[f])]
    if missing:
        return HandoffVerdict.reject(
            HandoffRejectionCode.INCOMPLETE,
            f"{proposal.to_agent} declares inputs {list(required_inputs)}; missing or empty: {missing}",
        )
    before = load_context(checkpoint)
    declared = set(proposal.dropped_keys) | set(proposal.summarised_keys)
    lost = sorted(k for k in before if k not in after and k not in declared)
    if lost:
        return HandoffVerdict.reject(
            HandoffRejectionCode.CONTEXT_LOST,
            f"keys {lost} were in the checkpoint and are missing from the proposal without being declared "
            "in dropped_keys or summarised_keys: context was lost at the handoff",
        )
    return HandoffVerdict(accepted=True, diff=diff_contexts(before, after))


class CheckpointView:
    """Latest checkpoint of every running workflow, fed from the checkpoints topic.

    Finished workflows are dropped (no handoff of theirs can be valid any more), so memory follows the
    running workflows, not every workflow ever checkpointed; an LRU bound caps it anyway. The feed's
    position per partition tells whether the view is complete up to a moment: a proposal's checkpoint
    was acknowledged before its step was requested, so once the feed has read up to the end offsets
    taken when the proposal arrived, a checkpoint still missing is not coming.
    """

    def __init__(self, *, capacity: int = 100_000) -> None:
        self._latest: OrderedDict[str, ContextSnapshot] = OrderedDict()
        self._positions: dict[int, int] = {}
        self._moved = asyncio.Event()
        self._capacity = capacity

    def update(self, event: WorkflowCheckpointed) -> None:
        """Record a checkpoint (older versions than the known one are ignored; a finished workflow is dropped)."""
        wf = event.envelope.workflow_id
        known = self._latest.get(wf)
        if known is not None and known.version > event.snapshot.version:
            return
        if event.state != "running":
            self._latest.pop(wf, None)
            return
        self._latest[wf] = event.snapshot
        self._latest.move_to_end(wf)
        while len(self._latest) > self._capacity:
            self._latest.popitem(last=False)

    def advance(self, partition: int, next_offset: int) -> None:
        """The feed has handled everything of this partition before next_offset."""
        if next_offset > self._positions.get(partition, 0):
            self._positions[partition] = next_offset
            self._moved.set()

    def __len__(self) -> int:
        return len(self._latest)

    def latest(self, workflow_id: str) -> ContextSnapshot | None:
        """The newest checkpoint known for a running workflow."""
        return self._latest.get(workflow_id)

    def caught_up(self, ends: Mapping[int, int]) -> bool:
        """Whether the feed has read every partition up to these end offsets."""
        return all(self._positions.get(p, 0) >= end for p, end in ends.items())

    async def wait_caught_up(self, ends: Mapping[int, int], timeout_s: float) -> bool:
        """Wait (at most timeout_s) until the feed has read up to these end offsets; True if it has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.caught_up(ends):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._moved.clear()
            try:
                await asyncio.wait_for(self._moved.wait(), remaining)
            except TimeoutError:
                return self.caught_up(ends)
        return True
