"""Attacks on a handoff by an agent that recomputes the hash: each is rejected, naming the key and the rule."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from baton.context import context_sha256, make_snapshot
from baton.contracts.models import (
    ContextSnapshot,
    Envelope,
    HandoffProposed,
    HandoffRejectionCode,
    ToolProvenance,
)
from baton.handoff import CheckpointFacts, HandoffVerdict, ToolReceipt, tool_call_key, tool_call_prefix, verify_handoff
from baton.tools.executor import StepTools
from baton.tools.registry import ToolRegistry
from baton.workflows import WorkflowSpec, load_workflows

Code = HandoffRejectionCode
WF = load_workflows()["customer_onboarding"]
WF_ID = "wf-7"
CUSTOMER = {"id": "cust-00001", "name": "Customer 1", "country": "DE", "risk_score": 82}
OTHER = {"id": "cust-00002", "name": "Customer 2", "country": "FR", "risk_score": 12}
IDENTITY = {"verified": True, "method": "document_match", "name": "Customer 1"}
DOCUMENTS = {"kinds": ["passport", "proof_of_address"], "all_valid": True, "count": 2}
COMPLIANCE = {"clear": True, "risk_score": 82}
# The context compliance_check was handed: the task's input plus what the two agents before it added.
HANDED = {"customer_id": "cust-00001", "customer": CUSTOMER, "identity": IDENTITY, "documents": DOCUMENTS}
CHECKPOINT = make_snapshot(HANDED, version=3)


def _call(agent: str, tool: str, workflow_id: str = WF_ID) -> str:
    return tool_call_key(workflow_id, agent, tool, step_version=3, ordinal=0)


def _prov(key: str, tool: str, value: Any, agent: str = "compliance_check", call_id: str = "") -> ToolProvenance:
    return ToolProvenance(
        key=key, tool=tool, call_id=call_id or _call(agent, tool), result_sha256=context_sha256(value)
    )


# What the world recorded where the tools ran.
RECEIPTS = {
    r.call_id: [r]
    for r in (
        ToolReceipt(_call("compliance_check", "screen_sanctions"), "screen_sanctions", context_sha256(COMPLIANCE)),
        ToolReceipt(_call("identity_verification", "lookup_customer"), "lookup_customer", context_sha256(CUSTOMER)),
        ToolReceipt(_call("identity_verification", "verify_identity"), "verify_identity", context_sha256(IDENTITY)),
        # another workflow really looked up the other customer
        ToolReceipt(
            _call("identity_verification", "lookup_customer", "wf-other"), "lookup_customer", context_sha256(OTHER)
        ),
    )
}


def _propose(
    after: dict[str, Any] | ContextSnapshot,
    *,
    agent: str = "compliance_check",
    parent: ContextSnapshot = CHECKPOINT,
    tenant: str = "t1",
    provenance: list[ToolProvenance] | None = None,
    **kw: Any,
) -> HandoffProposed:
    snapshot = (
        after if isinstance(after, ContextSnapshot) else make_snapshot(after, version=parent.version + 1, parent=parent)
    )
    return HandoffProposed(
        envelope=Envelope(workflow_id=WF_ID, tenant_id=tenant, producer=f"agent-{agent}"),
        from_agent=agent,
        to_agent="regulatory_filing",
        snapshot=snapshot,
        provenance=provenance if provenance is not None else [_prov("compliance", "screen_sanctions", COMPLIANCE)],
        **kw,
    )


def _verify(
    proposal: HandoffProposed,
    *,
    running: str = "compliance_check",
    checkpoint: ContextSnapshot = CHECKPOINT,
    workflow: WorkflowSpec = WF,
    receipts: dict[str, list[ToolReceipt]] | None = RECEIPTS,
) -> HandoffVerdict:
    facts = CheckpointFacts(snapshot=checkpoint, workflow_type=WF.name, tenant_id="t1", running_agent=running)
    return verify_handoff(proposal, checkpoint=facts, workflow=workflow, required_inputs=[], receipts=receipts)


def _rejected(verdict: HandoffVerdict, code: HandoffRejectionCode, *words: str) -> None:
    assert not verdict.accepted and verdict.code == code, (verdict.code, verdict.reason)
    for word in words:
        assert word in verdict.reason, (word, verdict.reason)


def _with(agent: str, **declared: list[str]) -> WorkflowSpec:
    """The onboarding declaration with extra may_drop / may_summarise for one agent."""
    agents = [a.model_copy(update=declared) if a.name == agent else a for a in WF.agents]
    return WF.model_copy(update={"agents": agents})


@pytest.mark.parametrize("receipts", [RECEIPTS, None])
def test_an_honest_handoff_is_accepted(receipts: dict[str, list[ToolReceipt]] | None) -> None:
    verdict = _verify(_propose(dict(HANDED, compliance=COMPLIANCE)), receipts=receipts)
    assert verdict.accepted, verdict.reason
    assert verdict.diff is not None and verdict.diff.added == ["compliance"]


def test_an_upstream_risk_score_lowered_and_rehashed_is_rejected() -> None:
    lowered = dict(HANDED, customer=dict(CUSTOMER, risk_score=5), compliance=COMPLIANCE)
    _rejected(_verify(_propose(lowered)), Code.NOT_OWNER, "'customer'", "identity_verification", "owner-writes")


def test_a_task_input_swapped_for_another_customer_is_rejected() -> None:
    swapped = dict(HANDED, customer_id="cust-00002", compliance=COMPLIANCE)
    _rejected(_verify(_propose(swapped)), Code.NOT_OWNER, "'customer_id'", "task-inputs-are-fixed")


def test_an_own_tool_value_rewritten_is_rejected_against_the_record_where_the_tool_ran() -> None:
    forged = dict(COMPLIANCE, risk_score=5)
    # The attacker also rewrites the provenance hash so the proposal agrees with itself.
    proposal = _propose(dict(HANDED, compliance=forged), provenance=[_prov("compliance", "screen_sanctions", forged)])
    _rejected(_verify(proposal), Code.TOOL_PROVENANCE, "'compliance'", "tool-receipt")
    # Without a record to compare with, a value that disagrees with its provenance is still caught...
    honest_hash = _propose(dict(HANDED, compliance=forged))
    _rejected(_verify(honest_hash, receipts=None), Code.TOOL_PROVENANCE, "'compliance'", "tool-result-unchanged")
    # ...but one whose provenance was rewritten too is not: that needs the record (docs/context-hashing.md).
    assert _verify(proposal, receipts=None).accepted


def test_another_customers_record_swapped_in_by_the_owner_is_rejected() -> None:
    first = make_snapshot({"customer_id": "cust-00001"}, version=1)
    after = {"customer_id": "cust-00001", "customer": OTHER, "identity": IDENTITY}
    own_call = [
        _prov("customer", "lookup_customer", OTHER, agent="identity_verification"),
        _prov("identity", "verify_identity", IDENTITY, agent="identity_verification"),
    ]
    proposal = _propose(after, agent="identity_verification", parent=first, provenance=own_call)
    verdict = _verify(proposal, running="identity_verification", checkpoint=first)
    _rejected(verdict, Code.TOOL_PROVENANCE, "'customer'", "tool-receipt")
    # Pointing at the call of another workflow that really returned that record does not help.
    elsewhere = _call("identity_verification", "lookup_customer", "wf-other")
    borrowed = [own_call[0].model_copy(update={"call_id": elsewhere}), own_call[1]]
    proposal = _propose(after, agent="identity_verification", parent=first, provenance=borrowed)
    verdict = _verify(proposal, running="identity_verification", checkpoint=first)
    _rejected(verdict, Code.TOOL_PROVENANCE, "'customer'", "tool-call-of-this-step")


@pytest.mark.parametrize("allowed", [[], sorted(HANDED)])
def test_a_hollow_context_is_rejected_even_where_every_drop_is_allowed(allowed: list[str]) -> None:
    proposal = _propose({"compliance": COMPLIANCE}, dropped_keys=sorted(HANDED))
    verdict = _verify(proposal, workflow=_with("compliance_check", may_drop=allowed))
    _rejected(verdict, Code.HOLLOW_CONTEXT, "hollow-context")


def test_a_drop_is_allowed_only_where_declared_for_that_agent() -> None:
    after = {k: v for k, v in HANDED.items() if k != "documents"} | {"compliance": COMPLIANCE}
    _rejected(_verify(_propose(after)), Code.CONTEXT_LOST, "documents")
    declared = _propose(after, dropped_keys=["documents"])
    _rejected(_verify(declared), Code.DROP_NOT_ALLOWED, "'documents'", "may-drop", "document_verification")
    assert _verify(declared, workflow=_with("compliance_check", may_drop=["documents"])).accepted


def test_a_summary_needs_the_declaration_and_the_hash_of_what_it_summarises() -> None:
    after = dict(HANDED, documents="2 valid documents", compliance=COMPLIANCE)
    source = {"documents": context_sha256(DOCUMENTS)}
    undeclared = _propose(after, summarised_keys=["documents"], summary_sources=source)
    _rejected(_verify(undeclared), Code.SUMMARY_INVALID, "'documents'", "may-summarise")
    allowed = _with("compliance_check", may_summarise=["documents"])
    wrong = _propose(after, summarised_keys=["documents"], summary_sources={"documents": context_sha256(OTHER)})
    _rejected(_verify(wrong, workflow=allowed), Code.SUMMARY_INVALID, "'documents'", "summary-source")
    assert _verify(undeclared, workflow=allowed).accepted
    # Summarising without saying so is a change of another agent's value.
    _rejected(_verify(_propose(after), workflow=allowed), Code.NOT_OWNER, "'documents'")


@pytest.mark.parametrize(
    ("provenance", "rule"),
    [
        ([], "tool-provenance"),
        ([_prov("compliance", "lookup_customer", COMPLIANCE)], "tool-provenance"),
    ],
)
def test_a_tool_value_without_its_provenance_is_rejected(provenance: list[ToolProvenance], rule: str) -> None:
    proposal = _propose(dict(HANDED, compliance=COMPLIANCE), provenance=provenance)
    _rejected(_verify(proposal), Code.TOOL_PROVENANCE, "'compliance'", rule)


def test_a_key_no_agent_declares_is_rejected() -> None:
    after = dict(HANDED, compliance=COMPLIANCE, approved_by_compliance=True)
    _rejected(_verify(_propose(after)), Code.NOT_OWNER, "'approved_by_compliance'", "no agent")


def test_a_proposal_from_an_agent_that_is_not_running_is_rejected() -> None:
    proposal = _propose(dict(HANDED, compliance=COMPLIANCE), agent="document_verification")
    _rejected(_verify(proposal), Code.NOT_RUNNING_AGENT, "document_verification", "compliance_check")


def test_a_proposal_for_another_tenants_workflow_is_rejected() -> None:
    proposal = _propose(dict(HANDED, compliance=COMPLIANCE), tenant="t2")
    _rejected(_verify(proposal), Code.TENANT_MISMATCH, "'t2'", "'t1'")


def test_a_workflow_type_the_validator_does_not_know_is_rejected() -> None:
    facts = CheckpointFacts(snapshot=CHECKPOINT, workflow_type="nope", tenant_id="t1", running_agent="compliance_check")
    verdict = verify_handoff(
        _propose(dict(HANDED, compliance=COMPLIANCE)), checkpoint=facts, workflow=None, required_inputs=[]
    )
    _rejected(verdict, Code.NOT_OWNER, "'nope'")


def _raw(text: str) -> ContextSnapshot:
    """Bytes an attacker sends with a hash and size that match them."""
    data = text.encode()
    return ContextSnapshot(
        context_json=text,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        version=CHECKPOINT.version + 1,
        parent_sha256=CHECKPOINT.sha256,
    )


CANONICAL = make_snapshot(dict(HANDED, compliance=COMPLIANCE), version=4, parent=CHECKPOINT).context_json


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (json.dumps(json.loads(CANONICAL), indent=1), "not the RFC 8785 encoding"),
        (json.dumps(dict(reversed(list(json.loads(CANONICAL).items())))), "not the RFC 8785 encoding"),
        (CANONICAL[:-1] + ',"customer_id":"cust-00002"}', "duplicate object key 'customer_id'"),
        (CANONICAL[:-1] + ',"z":NaN}', "NaN"),
        (CANONICAL[:-1] + ',"z":-Infinity}', "Infinity"),
        (CANONICAL[:-1] + ',"z":' + "[" * 40 + "]" * 40 + "}", "32-level limit"),
        (CANONICAL[:-1] + ',"z":' + "[" * 5000 + "]" * 5000 + "}", "limit"),
        (CANONICAL[:-1] + ',"z":9007199254740993}', "not the RFC 8785 encoding"),
        ('["not an object"]', "JSON object"),
    ],
)
def test_bytes_that_are_not_canonical_json_are_malformed(text: str, words: str) -> None:
    verdict = _verify(_propose(_raw(text)))
    _rejected(verdict, Code.MALFORMED, words)


def test_the_validator_knows_how_the_runtime_names_a_tool_call() -> None:
    key = StepTools(
        registry=ToolRegistry([]),
        ledger=None,  # type: ignore[arg-type]  # only the key is asked for
        workflow_id="wf-1",
        agent="compliance_check",
        tenant_id="t",
        step_version=3,
    ).key("screen_sanctions", 0)
    assert key.startswith(tool_call_prefix("wf-1", "compliance_check", "screen_sanctions"))
