"""Task admission: each rule rejects with its code and what to do; only admitted tasks count against the rate;
the supervisor halts a rejected task with one outcome and never requests a step for it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from baton.contracts.models import Envelope, TaskRequested
from baton.policy.admission import (
    Admitted,
    Rejected,
    RejectionCode,
    TaskAdmission,
    TaskFact,
    admit,
    tenant_rate_limiter,
)
from baton.policy.ownership import PatternOwners
from baton.policy.tenants import parse_tenants
from baton.supervisor import Outcome, RequestStep, Supervisor
from baton.workflows import load_workflows

TENANTS = parse_tenants(
    """
tenants:
  acme: {daily_spend_limit_usd: 10, tasks_per_minute: 2, resources: {ticket_id: "^acme-"}}
  globex: {daily_spend_limit_usd: 10, tasks_per_minute: 100, resources: {ticket_id: "^gx-"}}
  broke: {daily_spend_limit_usd: 1, tasks_per_minute: 100}
  retired: {active: false, daily_spend_limit_usd: 10, tasks_per_minute: 100}
"""
)
OWNERS = PatternOwners.from_config(TENANTS)


def decide(
    tenant: str, task_input: dict[str, Any], *, workflow: str = "support_refund", now: float = 0.0, rates: Any = None
) -> Admitted | Rejected:
    return admit(
        TaskFact(workflow, tenant, task_input),
        workflows={"support_refund"},
        tenants=TENANTS,
        owners=OWNERS,
        rates=rates if rates is not None else tenant_rate_limiter(),
        spend_exhausted=lambda t: t == "broke",
        now=now,
    )


@pytest.mark.parametrize(
    ("tenant", "task_input", "workflow", "code", "hint"),
    [
        ("acme", {}, "payroll", RejectionCode.UNKNOWN_WORKFLOW, "declared types: ['support_refund']"),
        ("initech", {}, "support_refund", RejectionCode.UNKNOWN_TENANT, "add it there"),
        ("retired", {}, "support_refund", RejectionCode.TENANT_INACTIVE, "sets it active"),
        ("acme", {"ticket_id": "gx-9"}, "support_refund", RejectionCode.CROSS_TENANT, "tenant 'globex'"),
        ("broke", {}, "support_refund", RejectionCode.SPEND_EXHAUSTED, "tomorrow (UTC)"),
    ],
)
def test_each_rule_rejects_with_its_code_and_what_to_do(
    tenant: str, task_input: dict[str, Any], workflow: str, code: RejectionCode, hint: str
) -> None:
    decided = decide(tenant, task_input, workflow=workflow)
    assert isinstance(decided, Rejected) and decided.code is code
    assert hint in decided.reason
    assert decided.outcome_code == f"ADMISSION_{code.value}"


def test_a_tenant_over_its_tasks_per_minute_is_rate_limited_and_rejections_do_not_count() -> None:
    rates = tenant_rate_limiter()
    assert decide("acme", {"ticket_id": "gx-1"}, rates=rates, now=0.0) != Admitted()  # cross-tenant: not counted
    assert decide("acme", {"ticket_id": "acme-1"}, rates=rates, now=0.0) == Admitted()
    assert decide("acme", {"ticket_id": "acme-2"}, rates=rates, now=10.0) == Admitted()
    limited = decide("acme", {"ticket_id": "acme-3"}, rates=rates, now=30.0)
    assert isinstance(limited, Rejected) and limited.code is RejectionCode.RATE_LIMITED
    assert "submit again in 30.0 s" in limited.reason
    assert decide("globex", {"ticket_id": "gx-3"}, rates=rates, now=30.0) == Admitted()  # tenants apart
    assert decide("acme", {"ticket_id": "acme-3"}, rates=rates, now=60.0) == Admitted()


def _task(tenant: str, workflow_id: str, ticket: str = "acme-1") -> TaskRequested:
    return TaskRequested(
        envelope=Envelope(workflow_id=workflow_id, tenant_id=tenant, producer="test"),
        workflow_type="support_refund",
        requested_by="test",
        input_json=json.dumps({"ticket_id": ticket}),
    )


def test_the_supervisor_halts_a_rejected_task_with_one_outcome_and_no_step() -> None:
    workflows = load_workflows()
    hook = TaskAdmission(workflows=workflows, tenants=TENANTS, owners=OWNERS, spend_exhausted=lambda t: t == "broke")
    sup = Supervisor(workflows, admit=hook)
    t = sup.handle(_task("acme", "wf-cross", ticket="gx-1"), now=0.0)
    assert t.state is not None
    [outcome] = t.effects
    assert isinstance(outcome, Outcome) and (outcome.kind, outcome.reason_code) == ("halted", "ADMISSION_CROSS_TENANT")
    assert outcome.reason.startswith("task rejected: ticket_id='gx-1' is a record of tenant 'globex'")
    sup.commit(t.state)
    sup.commit(sup.finalize(t.state))
    assert sup.handle(_task("acme", "wf-cross", ticket="gx-1"), now=1.0).state is None  # redelivered: no second
    admitted = sup.handle(_task("acme", "wf-ok"), now=0.0)
    assert admitted.effects == (RequestStep("ticket_lookup", 1),)
    for code, task in [
        ("ADMISSION_UNKNOWN_TENANT", _task("initech", "wf-1")),
        ("ADMISSION_TENANT_INACTIVE", _task("retired", "wf-2")),
        ("ADMISSION_SPEND_EXHAUSTED", _task("broke", "wf-3", ticket="t-1")),
    ]:
        [refused] = sup.handle(task, now=0.0).effects
        assert isinstance(refused, Outcome) and refused.reason_code == code


def test_without_the_hook_the_supervisor_admits_as_before() -> None:
    t = Supervisor(load_workflows()).handle(_task("initech", "wf-1"), now=0.0)
    assert t.effects == (RequestStep("ticket_lookup", 1),)
