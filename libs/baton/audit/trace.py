"""`baton audit trace`: a workflow's full lineage, reconstructed from the audit store."""

from __future__ import annotations

from typing import Any

from baton.audit.chain import Record
from baton.audit.store import AuditStore
from baton.control import ALL_KEY, ANY_TENANT, tenant_key


def _short(h: Any) -> str:
    return f"{str(h)[:12]}…" if h else "—"


def describe_step(doc: Record) -> str:
    """One line saying what a record means in the workflow's story."""
    p: dict[str, Any] = doc.get("payload") or {}
    kind = doc.get("event_type")
    snap = p.get("snapshot") or {}
    if kind == "TaskRequested":
        return f"task: {p.get('workflow_type')} requested by {p.get('requested_by')} (tenant {doc.get('tenant_id')})"
    if kind == "WorkflowCheckpointed":
        nxt = f", next {p.get('next_agent')}" if p.get("next_agent") else ""
        return f"checkpoint: context v{snap.get('version')} {_short(snap.get('sha256'))} state {p.get('state')}{nxt}"
    if kind == "StepRequested":
        diff = p.get("diff") or {}
        changed = f" (handoff diff +{diff.get('added')} -{diff.get('removed')} ~{diff.get('changed')})" if diff else ""
        return f"step: {p.get('agent')} runs on context v{snap.get('version')}, attempt {p.get('attempt')}{changed}"
    if kind == "AgentDecision":
        chosen = p.get("tool_selected") or "finish"
        return (
            f"decision: {p.get('agent')} considered {p.get('tools_considered')}, chose {chosen} "
            f"(confidence {p.get('confidence', 0):.2f}, {p.get('prompt_tokens', 0) + p.get('completion_tokens', 0)}"
            f" tokens) — {p.get('rationale')}"
        )
    if kind == "StepCompleted":
        if p.get("succeeded"):
            return (
                f"result: {p.get('agent')} done, {p.get('tool_calls')} tool calls, {p.get('tokens_used')} tokens, "
                f"context v{snap.get('version')} {_short(snap.get('sha256'))}"
            )
        return f"result: {p.get('agent')} FAILED {p.get('error_code')} ({p.get('failure_class')}): {p.get('error')}"
    if kind == "HandoffProposed":
        return (
            f"handoff proposed: {p.get('from_agent')} → {p.get('to_agent')}, context v{snap.get('version')} "
            f"sha {_short(snap.get('sha256'))} parent {_short(snap.get('parent_sha256'))}, {snap.get('size_bytes')} B"
        )
    if kind == "HandoffAccepted":
        d = p.get("diff") or {}
        return (
            f"handoff ACCEPTED: {p.get('from_agent')} → {p.get('to_agent')} sha {_short(snap.get('sha256'))}; "
            f"diff +{d.get('added')} -{d.get('removed')} ~{d.get('changed')}"
        )
    if kind == "HandoffRejected":
        return f"handoff REJECTED {p.get('reason_code')}: {p.get('reason')}"
    if kind == "ToolCallRequested":
        return (
            f"guard asked: {p.get('agent')} → {p.get('tool')} {p.get('arguments_json')} key {p.get('idempotency_key')}"
        )
    if kind == "ToolCallAuthorized":
        return (
            f"guard AUTHORIZED {p.get('agent')} → {p.get('tool')} ({p.get('tier')}) by {p.get('policies')} "
            f"policy {p.get('policy_version')}, cost {p.get('cost_usd', 0):.4f} USD"
        )
    if kind == "ToolCallDenied":
        return (
            f"guard DENIED {p.get('reason_code')} {p.get('agent')} → {p.get('tool')} "
            f"(policy {p.get('policy_version')}): {p.get('reason')}"
        )
    if kind == "GuardFlagged":
        items = ", ".join(f"{i.get('count')} {i.get('label')} at {i.get('path')}" for i in p.get("items") or [])
        found = items or p.get("figures")
        return f"guard {p.get('kind')} ({p.get('source')}, {p.get('tool') or '-'}): {found} — {p.get('detail')}"
    if kind == "ApprovalRequested":
        return f"approval requested: {p.get('tool')} — {p.get('reason')} (needs {p.get('required_approvals')})"
    if kind == "ApprovalDecided":
        return f"approval {p.get('decision')} by {p.get('decided_by')}: {p.get('comment') or ''}"
    if kind == "WorkflowCompleted":
        return f"OUTCOME completed after {p.get('steps')} steps, final context {_short(snap.get('sha256'))}"
    if kind == "WorkflowHalted":
        trip = " (budget trip)" if str(p.get("reason_code", "")).startswith("BUDGET") else ""
        return f"OUTCOME halted {p.get('reason_code')}{trip}: {p.get('reason')}"
    if kind == "WorkflowEscalated":
        return f"OUTCOME escalated to {p.get('escalated_to')}: {p.get('reason_code')}: {p.get('reason')}"
    if kind == "ControlCommand":
        target = f" {p.get('target')}" if p.get("target") else ""
        return f"KILL SWITCH {p.get('command')} {p.get('scope')}{target} by {p.get('issued_by')}: {p.get('reason')}"
    if kind == "ControlConfirmed":
        return f"kill switch confirmed by {p.get('role')} ({doc.get('producer')}): {p.get('halted')} halted"
    if kind == "Undecodable":
        return f"undecodable message (raw bytes kept in base64): {p.get('error')}"
    if kind == "DeadLettered":
        return f"dead-lettered from {p.get('source_topic')}: {p.get('reason_code')}: {p.get('reason')}"
    return f"{kind}: {p}"


async def trace_workflow(store: AuditStore, workflow_id: str) -> list[Record]:
    """Every record of a workflow, in its chain's order, with the kill-switch commands that covered it: those on
    the workflow itself are in its chain; those on its tenant or on everything are merged in by time."""
    records = [doc async for doc in store.stream_by_workflow(workflow_id)]
    tenant = next(
        (str(d["tenant_id"]) for d in records if d.get("tenant_id") not in (None, ANY_TENANT, "unknown")), None
    )
    if not records:
        return records
    keys = [ALL_KEY] + ([tenant_key(tenant)] if tenant is not None else [])
    # The chain is in the order the auditor read the topics, not in time order: the span is min to max.
    times = [_at(d) for d in records if d.get("occurred_at")]
    start, end = (min(times), max(times)) if times else ("", "")
    commands: list[Record] = []
    for key in keys:
        scope = [d async for d in store.stream_by_workflow(key) if d.get("event_type") == "ControlCommand"]
        before = [d for d in scope if _at(d) < start]
        # A halt in force when the workflow began (it was refused), and whatever came while it ran.
        if before and (before[-1].get("payload") or {}).get("command") == "HALT":
            commands.append(before[-1])
        commands += [d for d in scope if start <= _at(d) <= end]
    if not commands:
        return records
    # Merged by time without reordering the chain: each command goes before the first record that came after it.
    commands.sort(key=_at)
    merged: list[Record] = []
    for doc in records:
        while commands and _at(commands[0]) <= _at(doc):
            merged.append(commands.pop(0))
        merged.append(doc)
    return merged


def _at(doc: Record) -> str:
    return str(doc.get("occurred_at") or "")


def render_timeline(workflow_id: str, records: list[Record]) -> str:
    """The lineage as text: one numbered line per event."""
    if not records:
        return f"no audit records for workflow {workflow_id}: check the id, or that the auditor ran"
    lines = [f"workflow {workflow_id}: {len(records)} audited events"]
    for doc in records:
        dup = " [duplicate delivery]" if doc.get("duplicate_of") else ""
        signer = str(doc.get("signer") or "")
        # A forgery stands out in the lineage: who the bus could not vouch for is marked on its line.
        forged = f" [{signer}: not acted on]" if signer.startswith(("UNAUTHENTICATED", "NOT_AUTHORIZED")) else ""
        lines.append(
            f"{doc['workflow_seq']:>4}  {str(doc.get('occurred_at') or '')[11:23]:<12} {doc.get('topic'):<34}"
            f" {describe_step(doc)}{dup}{forged}"
        )
    return "\n".join(lines)
