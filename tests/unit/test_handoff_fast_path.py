"""The validator's fast path (received bytes hashed, parsed once, only changed values re-encoded) refuses all
the old path refused, whether or not the parent checkpoint's context was already proven canonical."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from baton.context import make_snapshot
from baton.contracts.models import ContextSnapshot, Envelope, HandoffProposed, HandoffRejectionCode
from baton.handoff import CheckpointFacts, HandoffVerdict, VerifiedContexts, bench_validation, verify_handoff
from baton.workflows import WorkflowSpec

Code = HandoffRejectionCode
BEFORE: dict[str, Any] = {"customer_id": "c-42", "flag": 1, "profile": {"a": 1, "b": [1, 2]}, "zeta": "z"}
SPEC = WorkflowSpec.model_validate(
    {
        "name": "fast_flow",
        "pattern": "pipeline",
        "autonomy_level": 3,
        "escalation": {"queue": "q"},
        "agents": [{"name": "first", "outputs": ["result", "notes"]}, {"name": "second", "inputs": ["customer_id"]}],
    }
)
CHECKPOINT = make_snapshot(BEFORE, version=3)
FACTS = CheckpointFacts(snapshot=CHECKPOINT, workflow_type=SPEC.name, tenant_id="t1", running_agent="first")


def _snapshot_of(text: str) -> ContextSnapshot:
    """A snapshot declaring exactly these bytes (hash and size over them, as a careful attacker would)."""
    raw = text.encode()
    return ContextSnapshot(
        context_json=text,
        sha256=hashlib.sha256(raw).hexdigest(),
        size_bytes=len(raw),
        version=4,
        parent_sha256=CHECKPOINT.sha256,
    )


def _verify(snapshot: ContextSnapshot, verified: VerifiedContexts | None) -> HandoffVerdict:
    proposal = HandoffProposed(
        envelope=Envelope(workflow_id="wf-1", tenant_id="t1", producer="agent"),
        from_agent="first",
        to_agent="second",
        snapshot=snapshot,
    )
    return verify_handoff(proposal, checkpoint=FACTS, workflow=SPEC, required_inputs=["customer_id"], verified=verified)


@pytest.fixture(params=["cold", "warm"])
def verified(request: pytest.FixtureRequest) -> VerifiedContexts | None:
    """No cache (every context parsed whole), or one already holding the checkpoint's proven context."""
    if request.param == "cold":
        return None
    cache = VerifiedContexts()
    first = _verify(make_snapshot(dict(BEFORE, result="ok"), version=4, parent=CHECKPOINT), cache)
    assert first.accepted and len(cache) == 2  # the checkpoint and the accepted proposal, both proven
    return cache


def test_a_faithful_proposal_is_accepted_with_its_diff(verified: VerifiedContexts | None) -> None:
    verdict = _verify(make_snapshot(dict(BEFORE, result="done", notes=[1.5]), version=4, parent=CHECKPOINT), verified)
    assert verdict.accepted and verdict.diff is not None
    assert verdict.diff.added == ["notes", "result"] and verdict.diff.changed == [] and verdict.diff.removed == []


def test_non_canonical_bytes_are_malformed_even_with_a_matching_hash(verified: VerifiedContexts | None) -> None:
    after = dict(BEFORE, result="done")
    for text in (
        json.dumps(after, sort_keys=True),  # whitespace
        json.dumps(after, separators=(",", ":"), sort_keys=True).replace('"done"', '"d\\u006fne"'),  # an escape
        json.dumps(dict(after, result=2.0), separators=(",", ":"), sort_keys=True),  # 2.0 for 2
    ):
        verdict = _verify(_snapshot_of(text), verified)
        assert verdict.code == Code.MALFORMED, text
        assert "not canonical" in verdict.reason


def test_bytes_changed_after_hashing_are_a_hash_mismatch(verified: VerifiedContexts | None) -> None:
    good = make_snapshot(dict(BEFORE, result="done"), version=4, parent=CHECKPOINT)
    tampered = good.model_copy(update={"context_json": good.context_json.replace('"c-42"', '"c-43"')})
    assert _verify(tampered, verified).code == Code.HASH_MISMATCH


def test_top_level_keys_reordered_are_malformed_though_every_value_is_the_checkpoints(
    verified: VerifiedContexts | None,
) -> None:
    pairs = [f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in BEFORE.items()]
    swapped = "{" + ",".join([pairs[1], pairs[0], *pairs[2:]]) + "}"
    verdict = _verify(_snapshot_of(swapped), verified)
    assert verdict.code == Code.MALFORMED
    assert "not the RFC 8785 encoding" in verdict.reason


def test_a_nested_key_reordered_is_malformed(verified: VerifiedContexts | None) -> None:
    text = make_snapshot(dict(BEFORE, result="x"), version=4).context_json.replace(
        '{"a":1,"b":[1,2]}', '{"b":[1,2],"a":1}'
    )
    assert _verify(_snapshot_of(text), verified).code == Code.MALFORMED


@pytest.mark.parametrize(
    ("key", "value"),
    [("customer_id", "c-43"), ("flag", True), ("flag", 1.5), ("profile", {"a": 1, "b": [2, 1]}), ("zeta", "y")],
)
def test_a_value_changed_in_place_is_seen_as_changed(verified: VerifiedContexts | None, key: str, value: Any) -> None:
    # Same keys, same length or same Python value (1 == True): only the bytes tell, and they do.
    verdict = _verify(make_snapshot(dict(BEFORE, **{key: value}), version=4, parent=CHECKPOINT), verified)
    assert verdict.code == Code.NOT_OWNER
    assert f"key {key!r}" in verdict.reason and "changed it" in verdict.reason


def test_a_cached_context_is_reused_only_for_the_same_bytes() -> None:
    cache = VerifiedContexts()
    accepted = make_snapshot(dict(BEFORE, result="ok"), version=4, parent=CHECKPOINT)
    assert _verify(accepted, cache).accepted
    impostor = accepted.model_copy(update={"context_json": accepted.context_json.replace('"ok"', '"no"')})
    assert cache.get(accepted) is not None and cache.get(impostor) is None


def test_the_cache_is_bounded_by_the_text_it_holds() -> None:
    cache = VerifiedContexts(max_text_bytes=200)
    for i in range(20):
        snap = make_snapshot(dict(BEFORE, result=f"r{i}"), version=4, parent=CHECKPOINT)
        assert _verify(snap, cache).accepted
    assert 0 < len(cache) <= 200 // len(CHECKPOINT.context_json)


def test_the_benchmark_entry_point_runs_both_paths() -> None:
    assert bench_validation(20, context_bytes=1024) > 0
    assert bench_validation(20, context_bytes=1024, warm=False) > 0
