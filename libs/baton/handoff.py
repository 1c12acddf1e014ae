"""Handoff verification: integrity, canonical bytes, staleness, ownership, provenance, completeness, loss.

Pure domain logic with no broker imports; the validator service calls verify_handoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from baton.context import (
    DEFAULT_MAX_CONTEXT_DEPTH,
    NonCanonicalContextError,
    ParsedContext,
    canonical_bytes,
    load_context,
    make_snapshot,
    parse_context,
)
from baton.contracts.models import (
    ContextDiff,
    ContextSnapshot,
    Envelope,
    HandoffProposed,
    HandoffRejectionCode,
    ToolProvenance,
    WorkflowCheckpointed,
)
from baton.workflows import AgentSpec, WorkflowSpec, load_workflows

DEFAULT_MAX_CONTEXT_BYTES = 1_000_000
TASK = "the task"  # owner of the task's input keys: no agent may change them

Code = HandoffRejectionCode


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


@dataclass(frozen=True)
class CheckpointFacts:
    """What the validator knows of a running workflow from its latest checkpoint."""

    snapshot: ContextSnapshot
    workflow_type: str
    tenant_id: str
    running_agent: str | None

    @classmethod
    def of(cls, event: WorkflowCheckpointed) -> CheckpointFacts:
        return cls(
            snapshot=event.snapshot,
            workflow_type=event.workflow_type,
            tenant_id=event.envelope.tenant_id,
            running_agent=event.next_agent,
        )


@dataclass(frozen=True)
class ToolReceipt:
    """A tool call as recorded where the tool ran: its call id, the tool and its result's RFC 8785 SHA-256."""

    call_id: str
    tool: str
    result_sha256: str


def tool_call_prefix(workflow_id: str, agent: str, tool: str) -> str:
    """How every call id (idempotency key) of this workflow's agent's tool starts (see tool_call_key)."""
    return f"{workflow_id}:{agent}:{tool}:"


def tool_call_key(workflow_id: str, agent: str, tool: str, *, step_version: int, ordinal: int) -> str:
    """The idempotency key of a step's ordinal-th distinct call of a tool: the step, not the arguments, names it
    (docs/decisions/0013-write-keys-name-the-step.md)."""
    return f"{tool_call_prefix(workflow_id, agent, tool)}v{step_version}.{ordinal}"


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def _sha(encoded: bytes) -> str:
    return hashlib.sha256(encoded).hexdigest()


def verify_snapshot(
    snapshot: ContextSnapshot,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_CONTEXT_DEPTH,
    known: ParsedContext | None = None,
) -> tuple[HandoffVerdict | None, ParsedContext | None]:
    """Size, truncation, hash of the exact bytes, then one strict parse; returns a rejection or the parsed context.

    The hash covers the bytes that travelled (context_json as UTF-8, which is what Avro carries for a
    string), which must be the RFC 8785 encoding of what they parse to: no duplicate keys, no NaN or
    Infinity, no deeper nesting than max_depth. Top-level values byte-equal to known's (a context
    already proven canonical) are not encoded again.
    """
    text = snapshot.context_json
    raw = text.encode("utf-8", errors="surrogatepass")
    if snapshot.size_bytes > max_bytes or len(raw) > max_bytes:
        return HandoffVerdict.reject(
            Code.OVERSIZED,
            f"context is {max(snapshot.size_bytes, len(raw))} bytes, over the {max_bytes}-byte limit: "
            "summarise or drop keys (declare them in summarised_keys / dropped_keys) before handing off",
        ), None
    if len(raw) != snapshot.size_bytes:
        return HandoffVerdict.reject(
            Code.TRUNCATED,
            f"context declared {snapshot.size_bytes} bytes but {len(raw)} arrived: it was truncated or padded "
            "between the sender and the validator; the supervisor rebuilds it from the last checkpoint",
        ), None
    actual = _sha(raw)
    if actual != snapshot.sha256:
        return HandoffVerdict.reject(
            Code.HASH_MISMATCH,
            f"context bytes hash to {actual[:16]}… but the sender declared {snapshot.sha256[:16]}…: "
            "they were altered after hashing; do not act on them",
        ), None
    try:
        parsed = parse_context(text, raw=raw, max_depth=max_depth, known=known)
    except NonCanonicalContextError as exc:
        return HandoffVerdict.reject(
            Code.MALFORMED, f"context_json is not canonical RFC 8785 JSON: {exc}; the sender must re-encode it"
        ), None
    return None, parsed


def verify_snapshot_integrity(
    snapshot: ContextSnapshot, *, max_bytes: int, max_depth: int = DEFAULT_MAX_CONTEXT_DEPTH
) -> tuple[HandoffVerdict | None, dict[str, Any]]:
    """verify_snapshot, returning the context itself ({} with a rejection)."""
    rejection, parsed = verify_snapshot(snapshot, max_bytes=max_bytes, max_depth=max_depth)
    return rejection, parsed.value if parsed is not None else {}


class VerifiedContexts:
    """Contexts this validator already proved canonical, by hash: a checkpoint is the context of a proposal
    accepted just before, so its values need not be encoded again. Bounded by the bytes of text held."""

    def __init__(self, *, max_text_bytes: int = 16_000_000) -> None:
        self._by_sha: OrderedDict[str, ParsedContext] = OrderedDict()
        self._held = 0
        self._max = max_text_bytes

    def get(self, snapshot: ContextSnapshot) -> ParsedContext | None:
        """The parsed context of a snapshot whose text is byte for byte one proven before, else None."""
        parsed = self._by_sha.get(snapshot.sha256)
        if parsed is None or parsed.text != snapshot.context_json:
            return None
        self._by_sha.move_to_end(snapshot.sha256)
        return parsed

    def remember(self, snapshot: ContextSnapshot, parsed: ParsedContext) -> None:
        if snapshot.sha256 in self._by_sha:
            return
        self._by_sha[snapshot.sha256] = parsed
        self._held += len(parsed.text)
        while self._held > self._max and self._by_sha:
            _, dropped = self._by_sha.popitem(last=False)
            self._held -= len(dropped.text)

    def __len__(self) -> int:
        return len(self._by_sha)


def _checkpoint_context(
    snapshot: ContextSnapshot, verified: VerifiedContexts | None, max_depth: int
) -> ParsedContext | None:
    """The checkpoint's context proven canonical (from the cache, else parsed now); None when it is not."""
    if verified is not None:
        hit = verified.get(snapshot)
        if hit is not None:
            return hit
    try:
        parsed = parse_context(snapshot.context_json, max_depth=max_depth)
    except NonCanonicalContextError:
        return None  # the supervisor adopts only canonical contexts; if one is not, compare values slowly
    if verified is not None:
        verified.remember(snapshot, parsed)
    return parsed


def _owner_name(owner: str) -> str:
    return TASK if owner == TASK else f"agent {owner}"


def _check_ownership(
    proposal: HandoffProposed,
    *,
    agent: AgentSpec,
    owners: Mapping[str, str],
    before: Mapping[str, Any],
    before_encoded: Callable[[str], str],
    after: Mapping[str, Any],
    changed: Collection[str],
    added: Collection[str],
) -> HandoffVerdict | None:
    """Drops, summaries and writes each allowed for the proposing agent by the workflow declaration."""
    name = agent.name
    dropped, summarised = set(proposal.dropped_keys), set(proposal.summarised_keys)
    removed = [k for k in before if k not in after]
    if before and len(removed) == len(before):
        return HandoffVerdict.reject(
            Code.HOLLOW_CONTEXT,
            f"rule hollow-context: every key of the checkpoint {sorted(before)} is gone from {name}'s proposal "
            f"(declared dropped: {sorted(dropped & set(before))}); a context that keeps nothing it was handed "
            "cannot be checked against it",
        )
    lost = sorted(k for k in removed if k not in dropped and k not in summarised)
    if lost:
        return HandoffVerdict.reject(
            Code.CONTEXT_LOST,
            f"keys {lost} were in the checkpoint and are missing from the proposal without being declared "
            "in dropped_keys or summarised_keys: context was lost at the handoff",
        )
    for key in sorted(removed):
        if key in summarised:
            return HandoffVerdict.reject(
                Code.SUMMARY_INVALID,
                f"key {key!r}: rule summary-keeps-key: a summarised key stays in the context holding its summary; "
                f"{name} removed it (declare it in dropped_keys if dropping it is allowed)",
            )
        if key not in agent.may_drop:
            return HandoffVerdict.reject(
                Code.DROP_NOT_ALLOWED,
                f"key {key!r} (owned by {_owner_name(owners.get(key, TASK))}): rule may-drop: {name} dropped it, "
                f"but the workflow lets {name} drop only {sorted(agent.may_drop)}",
            )
    for key in sorted(summarised):
        if key not in agent.may_summarise:
            return HandoffVerdict.reject(
                Code.SUMMARY_INVALID,
                f"key {key!r}: rule may-summarise: {name} declared a summary of it, but the workflow lets "
                f"{name} summarise only {sorted(agent.may_summarise)}",
            )
        if key not in before:
            return HandoffVerdict.reject(
                Code.SUMMARY_INVALID,
                f"key {key!r}: rule summary-source: it is not in the checkpoint, so there is nothing to summarise",
            )
        source = _sha(before_encoded(key).encode())
        declared = proposal.summary_sources.get(key)
        if declared != source:
            return HandoffVerdict.reject(
                Code.SUMMARY_INVALID,
                f"key {key!r}: rule summary-source: the summary names source hash {str(declared)[:16]}…, but the "
                f"checkpoint's value hashes to {source[:16]}…: a summary must say which value it summarises",
            )
    for key in sorted({*added, *changed} - summarised):
        owner = owners.get(key, TASK if key in before else "")
        if owner != name:
            rule = "task-inputs-are-fixed" if owner == TASK else "owner-writes"
            whose = f"owned by {_owner_name(owner)}" if owner else "declared as an output by no agent"
            verb = "added" if key in added else "changed"
            return HandoffVerdict.reject(
                Code.NOT_OWNER,
                f"key {key!r} ({whose}): rule {rule}: {name} {verb} it, but an agent may add or change only "
                f"the keys it owns ({sorted(agent.owned_keys())})",
            )
    return None


def _check_provenance(
    proposal: HandoffProposed,
    *,
    agent: AgentSpec,
    after_encoded: Callable[[str], str],
    written: Collection[str],
    receipts: Mapping[str, Collection[ToolReceipt]] | None,
) -> HandoffVerdict | None:
    """Every tool-result key the agent wrote equals what its tool returned, as recorded where the tool ran."""
    entries: dict[str, list[Any]] = {}
    for p in proposal.provenance:
        entries.setdefault(p.key, []).append(p)
    wf = proposal.envelope.workflow_id
    for key in sorted(written):
        tool = agent.tool_for_key(key)
        if tool is None:
            continue  # an output no tool produces: the agent's own value, owned by it
        found = entries.get(key, [])
        if len(found) != 1:
            return HandoffVerdict.reject(
                Code.TOOL_PROVENANCE,
                f"key {key!r}: rule tool-provenance: it holds the result of {tool.name}, but the proposal carries "
                f"{len(found)} provenance entries for it (exactly one expected: tool, call id, result hash)",
            )
        p = found[0]
        actual = _sha(after_encoded(key).encode())
        if p.tool != tool.name:
            return HandoffVerdict.reject(
                Code.TOOL_PROVENANCE,
                f"key {key!r}: rule tool-provenance: its provenance names tool {p.tool!r}, but {agent.name} "
                f"stores only {tool.name}'s result under it",
            )
        if p.result_sha256 != actual:
            return HandoffVerdict.reject(
                Code.TOOL_PROVENANCE,
                f"key {key!r}: rule tool-result-unchanged: the value hashes to {actual[:16]}…, but {tool.name} "
                f"returned a result hashing to {p.result_sha256[:16]}… (call {p.call_id}): the value was altered",
            )
        if not p.call_id.startswith(tool_call_prefix(wf, agent.name, tool.name)):
            return HandoffVerdict.reject(
                Code.TOOL_PROVENANCE,
                f"key {key!r}: rule tool-call-of-this-step: call id {p.call_id!r} is not a call of {tool.name} by "
                f"{agent.name} in workflow {wf}",
            )
        if receipts is not None and not any(
            r.tool == p.tool and r.result_sha256 == actual for r in receipts.get(p.call_id, ())
        ):
            return HandoffVerdict.reject(
                Code.TOOL_PROVENANCE,
                f"key {key!r}: rule tool-receipt: no record where {tool.name} ran shows call {p.call_id} "
                f"returning a result hashing to {actual[:16]}…: the value is not what the tool returned",
            )
    return None


def verify_handoff(
    proposal: HandoffProposed,
    *,
    checkpoint: CheckpointFacts | None,
    workflow: WorkflowSpec | None,
    required_inputs: Sequence[str],
    receipts: Mapping[str, Collection[ToolReceipt]] | None = None,
    max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
    max_depth: int = DEFAULT_MAX_CONTEXT_DEPTH,
    verified: VerifiedContexts | None = None,
) -> HandoffVerdict:
    """Verify a proposed handoff against the workflow's last checkpoint, its declaration and the tool records.

    receipts: call id -> the calls recorded where the tools ran; None when no record is reachable (then
    a tool value is checked against the hash its own proposal declares, not against the tool's record).
    verified: contexts already proven canonical (the validator keeps one across proposals), or None.
    """
    snap = proposal.snapshot
    # The parent checkpoint's context, proven canonical, lets the proposal's unchanged values be checked
    # by comparing bytes: only what the agent changed is canonicalised (and compared) value by value.
    parent: ParsedContext | None = None
    if checkpoint is not None and snap.parent_sha256 == checkpoint.snapshot.sha256:
        parent = _checkpoint_context(checkpoint.snapshot, verified, max_depth)
    rejection, parsed = verify_snapshot(snap, max_bytes=max_bytes, max_depth=max_depth, known=parent)
    if rejection is not None:
        return rejection
    assert parsed is not None
    after = parsed.value
    wf = proposal.envelope.workflow_id
    if checkpoint is None:
        return HandoffVerdict.reject(
            Code.STALE,
            f"no checkpoint is known for workflow {wf}, so the proposal's parent "
            "cannot be checked; the supervisor must checkpoint before a step runs",
        )
    if proposal.envelope.tenant_id != checkpoint.tenant_id:
        return HandoffVerdict.reject(
            Code.TENANT_MISMATCH,
            f"rule tenant: the proposal says tenant {proposal.envelope.tenant_id!r}, but workflow {wf} belongs "
            f"to tenant {checkpoint.tenant_id!r}",
        )
    if proposal.from_agent != checkpoint.running_agent:
        return HandoffVerdict.reject(
            Code.NOT_RUNNING_AGENT,
            f"rule proposer-is-running: the proposal comes from {proposal.from_agent!r}, but the checkpoint says "
            f"{checkpoint.running_agent!r} is the agent running in {wf}: only it may hand off",
        )
    cp = checkpoint.snapshot
    if snap.parent_sha256 != cp.sha256 or snap.version != cp.version + 1:
        return HandoffVerdict.reject(
            Code.STALE,
            f"proposal is version {snap.version} derived from {str(snap.parent_sha256)[:16]}…, but the last "
            f"checkpoint is version {cp.version} ({cp.sha256[:16]}…): the agent worked on an "
            "outdated context; the supervisor rebuilds from the last checkpoint",
        )
    if workflow is None:
        return HandoffVerdict.reject(
            Code.NOT_OWNER,
            f"rule declared-workflow: workflow type {checkpoint.workflow_type!r} of {wf} is not declared to the "
            "validator, so no key's owner is known; deploy the validator with the same workflow declarations",
        )
    try:
        agent = workflow.agent(proposal.from_agent)
    except KeyError:
        return HandoffVerdict.reject(
            Code.NOT_RUNNING_AGENT,
            f"rule proposer-is-declared: {proposal.from_agent!r} is not an agent of {workflow.name}",
        )
    before_encoded: Callable[[str], str]
    if parent is not None:
        before, before_encoded = parent.value, parent.encoded
        # parse_context compared every value with the parent's encoding: the rest are byte for byte equal.
        changed = [k for k in parsed.fresh if k in before]
        added = [k for k in parsed.fresh if k not in before]
    else:
        before = load_context(cp)

        def before_encoded(key: str) -> str:
            return canonical_bytes(before[key]).decode("utf-8")

        # Both encodings are canonical, so they are equal exactly when the values are.
        changed = [k for k in after if k in before and parsed.encoded(k) != before_encoded(k)]
        added = [k for k in after if k not in before]
    refused = _check_ownership(
        proposal,
        agent=agent,
        owners=workflow.key_owners(),
        before=before,
        before_encoded=before_encoded,
        after=after,
        changed=changed,
        added=added,
    ) or _check_provenance(
        proposal,
        agent=agent,
        after_encoded=parsed.encoded,
        written=set(added) | (set(changed) - set(proposal.summarised_keys)),
        receipts=receipts,
    )
    if refused is not None:
        return refused
    missing = [f for f in required_inputs if f not in after or _empty(after[f])]
    if missing:
        return HandoffVerdict.reject(
            Code.INCOMPLETE,
            f"{proposal.to_agent} declares inputs {list(required_inputs)}; missing or empty: {missing}",
        )
    if verified is not None:
        verified.remember(snap, parsed)  # the next checkpoint of this workflow carries these very bytes
    diff = ContextDiff(
        added=sorted(added), removed=sorted(k for k in before if k not in after), changed=sorted(changed)
    )
    return HandoffVerdict(accepted=True, diff=diff)


class CheckpointView:
    """Latest checkpoint of every running workflow, fed from the checkpoints topic.

    Finished workflows are dropped (no handoff of theirs can be valid any more), so memory follows the
    running workflows, not every workflow ever checkpointed; an LRU bound caps it anyway. The feed's
    position per partition tells whether the view is complete up to a moment: a proposal's checkpoint
    was acknowledged before its step was requested, so once the feed has read up to the end offsets
    taken when the proposal arrived, a checkpoint still missing is not coming.
    """

    def __init__(self, *, capacity: int = 100_000) -> None:
        self._latest: OrderedDict[str, CheckpointFacts] = OrderedDict()
        self._positions: dict[int, int] = {}
        self._moved = asyncio.Event()
        self._capacity = capacity

    def update(self, event: WorkflowCheckpointed) -> None:
        """Record a checkpoint (older versions than the known one are ignored; a finished workflow is dropped)."""
        wf = event.envelope.workflow_id
        known = self._latest.get(wf)
        if known is not None and known.snapshot.version > event.snapshot.version:
            return
        if event.state != "running":
            self._latest.pop(wf, None)
            return
        self._latest[wf] = CheckpointFacts.of(event)
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
        facts = self._latest.get(workflow_id)
        return facts.snapshot if facts is not None else None

    def facts(self, workflow_id: str) -> CheckpointFacts | None:
        """The newest checkpoint of a running workflow with its type, tenant and running agent."""
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


_Fixture = tuple[HandoffProposed, CheckpointFacts, dict[str, Collection[ToolReceipt]]]


def _bench_fixtures(count: int, context_bytes: int) -> tuple[WorkflowSpec, list[str], list[_Fixture]]:
    """Proposals of customer onboarding's document_verification step, each on its own workflow: the
    checkpoint holds the task's input, two tool results and application fields up to context_bytes; the
    proposal adds the step's tool result with its provenance and receipt."""
    workflow = load_workflows()["customer_onboarding"]
    agent, tool = "document_verification", "check_documents"
    fixtures: list[_Fixture] = []
    for i in range(count):
        wf = f"wf-bench-{i:06d}"
        before: dict[str, Any] = {
            "customer_id": f"cust-{i:05d}",
            "customer": {"id": f"cust-{i:05d}", "name": f"Customer {i}", "country": "DE", "risk_score": 42},
            "identity": {"verified": True, "method": "document_match", "name": f"Customer {i}"},
        }
        field = 0
        while len(canonical_bytes(before)) < context_bytes - 100:
            before[f"application_{field:03d}"] = {
                "answer": f"answer {field} of applicant {i}",
                "score": 0.25 + field,
                "position": field,
                "confirmed": field % 2 == 0,
                "tags": ["kyc", "web"],
            }
            field += 1
        result = {"kinds": ["passport", "proof_of_address"], "all_valid": True, "count": 2}
        call_id = f"{tool_call_prefix(wf, agent, tool)}{i:016x}"
        sha = _sha(canonical_bytes(result))
        checkpoint = make_snapshot(before, version=3)
        proposal = HandoffProposed(
            envelope=Envelope(workflow_id=wf, tenant_id="tenant-0", producer=agent),
            from_agent=agent,
            to_agent="compliance_check",
            snapshot=make_snapshot(dict(before, documents=result), version=4, parent=checkpoint),
            provenance=[ToolProvenance(key="documents", tool=tool, call_id=call_id, result_sha256=sha)],
        )
        facts = CheckpointFacts(
            snapshot=checkpoint, workflow_type=workflow.name, tenant_id="tenant-0", running_agent=agent
        )
        fixtures.append((proposal, facts, {call_id: [ToolReceipt(call_id, tool, sha)]}))
    return workflow, list(workflow.agent("compliance_check").inputs), fixtures


def bench_validation(n: int, *, context_bytes: int = 2048, warm: bool = True) -> float:
    """Seconds verify_handoff takes per proposal, over n proposals with contexts of about context_bytes.

    warm: the checkpoint's context is already proven canonical (as when it is the context the validator
    accepted just before, every handoff but a workflow's first); cold: it is parsed and proven each time.
    """
    workflow, required, fixtures = _bench_fixtures(min(n, 1000), context_bytes)
    # Room for every fixture's checkpoint and proposal, so the warm figure never measures evictions.
    verified = VerifiedContexts(max_text_bytes=4 * context_bytes * len(fixtures)) if warm else None
    if verified is not None:
        for _proposal, facts, _receipts in fixtures:
            _checkpoint_context(facts.snapshot, verified, DEFAULT_MAX_CONTEXT_DEPTH)
    started = time.perf_counter()
    for i in range(n):
        proposal, facts, receipts = fixtures[i % len(fixtures)]
        verdict = verify_handoff(
            proposal,
            checkpoint=facts,
            workflow=workflow,
            required_inputs=required,
            receipts=receipts,
            verified=verified,
        )
        if not verdict.accepted:
            raise AssertionError(f"the benchmark's proposal was refused: {verdict.reason}")
    return (time.perf_counter() - started) / n


def bench_validation_baseline(n: int, *, context_bytes: int = 2048) -> float:
    """Seconds per proposal to hash the received context bytes and parse them once (json.loads), same inputs."""
    _workflow, _required, fixtures = _bench_fixtures(min(n, 1000), context_bytes)
    started = time.perf_counter()
    for i in range(n):
        snapshot = fixtures[i % len(fixtures)][0].snapshot
        raw = snapshot.context_json.encode("utf-8")
        if hashlib.sha256(raw).hexdigest() != snapshot.sha256 or not isinstance(json.loads(raw), dict):
            raise AssertionError("the benchmark's context does not hash to its declared sha256")
    return (time.perf_counter() - started) / n
