"""Workflow declarations: the reference workflows load, and a bad declaration says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.workflows import END, WorkflowDeclarationError, agent_kinds, load_workflow, load_workflows


def test_reference_workflows_declare_both_patterns() -> None:
    specs = load_workflows()
    assert set(specs) == {"customer_onboarding", "support_refund"}
    onboarding, refund = specs["customer_onboarding"], specs["support_refund"]
    assert onboarding.pattern == "pipeline" and refund.pattern == "supervisor"
    assert [a.name for a in onboarding.agents][-1] == "regulatory_filing"
    assert onboarding.agent("regulatory_filing").critical
    assert onboarding.next_agent("compliance_check", {}) == "regulatory_filing"
    assert onboarding.next_agent("regulatory_filing", {}) == END
    assert refund.next_agent("refund_preview", {"refund_preview": {"amount": 12.5}}) == "refund_issuer"
    assert refund.next_agent("refund_preview", {"refund_preview": {"amount": 0}}) == END
    assert len(agent_kinds(specs)) == 7


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name: x\npattern: pipeline\nautonomy_level: 9\nagents: []\nescalation: {queue: q}\n", "autonomy_level"),
        (
            "name: x\npattern: supervisor\nautonomy_level: 3\nescalation: {queue: q}\n"
            "agents: [{name: a}]\nroutes: [{after: a, to: ghost}]\n",
            "unknown agent 'ghost'",
        ),
        (
            "name: x\npattern: pipeline\nautonomy_level: 3\nescalation: {queue: q}\n"
            "agents: [{name: a, tools: [{name: t, tier: ROOT, result_key: r}]}]\n",
            "tier",
        ),
        ("name: [unclosed\n", "x.yaml"),
    ],
)
def test_a_bad_declaration_names_the_problem(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(body)
    with pytest.raises(WorkflowDeclarationError, match=message):
        load_workflow(path)


def test_deletions_and_regulatory_filings_always_wait_and_other_decisions_escalate_by_the_fields_thresholds() -> None:
    from baton.workflows import DECISION_THRESHOLDS, AgentSpec, ToolSpec

    refund = load_workflows()["support_refund"]
    plain = ToolSpec(name="purge_customer", tier="WRITE", result_key="purged")
    assert not refund.needs_approval(plain, {})
    for kind in ("deletion", "regulatory_filing"):
        assert refund.needs_approval(plain.model_copy(update={"decision_type": kind}), {})
    assert DECISION_THRESHOLDS == {
        "document_classification": 0.85,
        "report_generation": 0.80,
        "moderation": 0.75,
        "routing": 0.70,
    }
    for kind, threshold in DECISION_THRESHOLDS.items():
        assert refund.threshold_for(AgentSpec(name="x", decision_type=kind)) == threshold
    # The agent's own threshold, then the workflow's for it, win over its decision type's.
    assert refund.threshold_for(AgentSpec(name="x", decision_type="routing", confidence_threshold=0.9)) == 0.9
    assert refund.threshold_for(AgentSpec(name="x")) == refund.confidence_thresholds["default"]


def test_an_approval_that_escalates_on_expiry_names_where_to(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from baton.workflows import ApprovalRule

    assert ApprovalRule(always=True, approvers=2).approvers == 2
    with pytest.raises(ValidationError, match="escalate_to"):
        ApprovalRule(always=True, on_expiry="escalate")
    with pytest.raises(ValidationError):
        ApprovalRule(always=True, approvers=0)
