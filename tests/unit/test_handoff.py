"""verify_handoff: every way a handoff can go wrong is caught, and a good one passes with its diff."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from baton.context import context_sha256, make_snapshot
from baton.contracts.models import (
    ContextSnapshot,
    Envelope,
    HandoffProposed,
    HandoffRejectionCode,
    WorkflowCheckpointed,
)
from baton.handoff import CheckpointFacts, CheckpointView, HandoffVerdict, verify_handoff
from baton.workflows import WorkflowSpec

BEFORE = {"customer_id": "c-42", "name": "Zoë", "documents": ["passport"], "notes": "long history"}
# identity_verification owns what it writes here; notes and documents may be dropped and summarised by it.
SPEC = WorkflowSpec.model_validate(
    {
        "name": "test_flow",
        "pattern": "pipeline",
        "autonomy_level": 3,
        "escalation": {"queue": "q"},
        "agents": [
            {
                "name": "identity_verification",
                "outputs": ["identity_verified", "name", "amount", "extra", "blob"],
                "may_drop": ["notes"],
                "may_summarise": ["documents"],
            },
            {"name": "document_verification", "inputs": ["customer_id"]},
        ],
    }
)


def _verify(proposal: HandoffProposed, cp: ContextSnapshot | None, **kw: Any) -> HandoffVerdict:
    facts = None
    if cp is not None:
        facts = CheckpointFacts(
            snapshot=cp, workflow_type=SPEC.name, tenant_id="t1", running_agent="identity_verification"
        )
    return verify_handoff(proposal, checkpoint=facts, workflow=SPEC, **kw)


def _checkpoint(ctx: dict[str, Any] | None = None, version: int = 3) -> ContextSnapshot:
    return make_snapshot(ctx or BEFORE, version=version)


def _proposal(snapshot: ContextSnapshot, **kw: Any) -> HandoffProposed:
    return HandoffProposed(
        envelope=Envelope(workflow_id="wf-1", tenant_id="t1", producer="agent"),
        from_agent="identity_verification",
        to_agent="document_verification",
        snapshot=snapshot,
        **kw,
    )


def test_a_faithful_handoff_is_accepted_with_its_diff() -> None:
    cp = _checkpoint()
    after = dict(BEFORE, identity_verified=True, name="Zoë Q.")
    verdict = _verify(_proposal(make_snapshot(after, version=4, parent=cp)), cp, required_inputs=["customer_id"])
    assert verdict.accepted
    assert verdict.diff is not None
    assert verdict.diff.added == ["identity_verified"] and verdict.diff.changed == ["name"]


def test_truncated_context_is_rejected() -> None:
    cp = _checkpoint()
    good = make_snapshot(dict(BEFORE, extra="x" * 100), version=4, parent=cp)
    cut = good.model_copy(update={"context_json": good.context_json[:-40]})
    verdict = _verify(_proposal(cut), cp, required_inputs=[])
    assert verdict.code == HandoffRejectionCode.TRUNCATED
    assert "truncated" in verdict.reason


def test_tampered_context_with_unchanged_hash_is_rejected() -> None:
    cp = _checkpoint()
    good = make_snapshot(dict(BEFORE, amount=100), version=4, parent=cp)
    tampered_json = good.context_json.replace('"amount":100', '"amount":900')
    tampered = good.model_copy(update={"context_json": tampered_json})
    assert tampered.size_bytes == len(tampered_json.encode())
    verdict = _verify(_proposal(tampered), cp, required_inputs=[])
    assert verdict.code == HandoffRejectionCode.HASH_MISMATCH


def test_context_derived_from_an_old_checkpoint_is_stale() -> None:
    old = _checkpoint(version=2)
    current = _checkpoint(dict(BEFORE, step="newer"), version=3)
    verdict = _verify(_proposal(make_snapshot(BEFORE, version=3, parent=old)), current, required_inputs=[])
    assert verdict.code == HandoffRejectionCode.STALE
    assert "outdated" in verdict.reason


def test_missing_checkpoint_is_stale_not_accepted() -> None:
    verdict = _verify(_proposal(make_snapshot(BEFORE, version=1)), None, required_inputs=[])
    assert verdict.code == HandoffRejectionCode.STALE


@pytest.mark.parametrize("empty", [None, "", [], {}])
def test_missing_or_empty_required_input_is_incomplete(empty: Any) -> None:
    cp = _checkpoint()
    after = dict(BEFORE, identity_verified=empty)
    verdict = _verify(_proposal(make_snapshot(after, version=4, parent=cp)), cp, required_inputs=["identity_verified"])
    assert verdict.code == HandoffRejectionCode.INCOMPLETE
    assert "identity_verified" in verdict.reason


def test_keys_dropped_silently_are_context_loss_but_declared_ones_are_not() -> None:
    cp = _checkpoint()
    after = {k: v for k, v in BEFORE.items() if k not in ("notes", "name")}
    silent = _verify(_proposal(make_snapshot(after, version=4, parent=cp)), cp, required_inputs=[])
    assert silent.code == HandoffRejectionCode.CONTEXT_LOST
    assert "['name', 'notes']" in silent.reason
    summary = dict(after, documents="1 document", name=BEFORE["name"])
    declared = _verify(
        _proposal(
            make_snapshot(summary, version=4, parent=cp),
            dropped_keys=["notes"],
            summarised_keys=["documents"],
            summary_sources={"documents": context_sha256(BEFORE["documents"])},
        ),
        cp,
        required_inputs=[],
    )
    assert declared.accepted, declared.reason
    assert declared.diff is not None and declared.diff.removed == ["notes"] and declared.diff.changed == ["documents"]


def test_oversized_and_malformed_contexts_are_rejected() -> None:
    cp = _checkpoint()
    big = make_snapshot(dict(BEFORE, blob="x" * 5000), version=4, parent=cp)
    assert _verify(_proposal(big), cp, required_inputs=[], max_bytes=1000).code == (HandoffRejectionCode.OVERSIZED)
    sha = hashlib.sha256(b"[1,2]").hexdigest()
    garbage = ContextSnapshot(context_json="[1,2]", sha256=sha, size_bytes=5, version=4, parent_sha256=cp.sha256)
    assert _verify(_proposal(garbage), cp, required_inputs=[]).code == HandoffRejectionCode.MALFORMED


async def test_checkpoint_view_answers_once_the_feed_has_read_up_to_a_moment() -> None:
    view = CheckpointView()
    cp = _checkpoint(version=5)
    event = WorkflowCheckpointed(
        envelope=Envelope(workflow_id="wf-1", tenant_id="t1", producer="sup"),
        workflow_type="x",
        state="running",
        snapshot=cp,
    )
    waiting = asyncio.create_task(view.wait_caught_up({0: 3, 1: 1}, timeout_s=10))
    await asyncio.sleep(0)
    view.update(event)
    view.advance(0, 3)
    assert not waiting.done() or not await waiting
    view.advance(1, 1)
    assert await waiting is True
    assert view.latest("wf-1") == cp
    assert await view.wait_caught_up({2: 1}, timeout_s=0.01) is False  # the feed never read partition 2
    older = event.model_copy(update={"snapshot": _checkpoint(version=4)})
    view.update(older)
    assert view.latest("wf-1") == cp


def test_checkpoint_view_holds_running_workflows_only() -> None:
    view = CheckpointView(capacity=3)
    for i in range(10):
        env = Envelope(workflow_id=f"wf-{i}", tenant_id="t1", producer="sup")
        running = WorkflowCheckpointed(
            envelope=env, workflow_type="x", state="running", snapshot=_checkpoint(version=1)
        )
        view.update(running)
        if i % 2:
            view.update(running.model_copy(update={"state": "completed", "snapshot": _checkpoint(version=2)}))
    assert len(view) <= 3 and view.latest("wf-8") is not None  # bounded, newest kept, finished ones (odd) gone
    assert all(view.latest(f"wf-{i}") is None for i in range(1, 10, 2))
