"""The guard's verdict on one request (baton.policy.guard): each refusal names its rule, every verdict its policy
version, an authorization carries a grant for exactly the call, and a redelivered request costs once."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from baton import identity
from baton.context import canonical_bytes
from baton.contracts.models import FailureClass
from baton.handoff import tool_call_key
from baton.identity import Identity, Keyring
from baton.policy.decisions import Policies
from baton.policy.grants import check_grant, issue_approval_token, issue_ticket
from baton.policy.guard import ToolAsk, ToolCallGuard, approval_id_of
from baton.policy.ownership import HookOwners
from baton.policy.rates import SlidingWindowLimiter
from baton.policy.spend import SpendAccounts
from baton.policy.spend_sqlite import SqliteSpendStore
from baton.policy.tenants import Prices
from baton.workflows import WorkflowSpec, default_workflow_dir, load_workflows

GUARD = Identity.generate(identity.POLICY_GUARD)
SUPERVISOR = Identity.generate(identity.SUPERVISOR)
APPROVALS = Identity.generate(identity.APPROVALS)
ROGUE = Identity.generate(identity.agent_role("refund_issuer"))
KEYRING = Keyring.of([GUARD, SUPERVISOR, APPROVALS, ROGUE])
OWNERS = {"ticket_id": {"T-1": "tenant-1", "T-2": "tenant-2"}}
NOW = 1_800_000_000.0


def _owner_of(argument: str, value: Any) -> str | None:
    return OWNERS.get(argument, {}).get(value)


def _guard(
    tmp_path: Path, *, limit: float = 10.0, cost: float = 0.0, rate: int = 50, tokens: float = 0.0
) -> ToolCallGuard:
    return ToolCallGuard(
        workflows=load_workflows(),
        policies=Policies.load(default_workflow_dir()),
        signer=GUARD,
        keyring=KEYRING,
        spend=SpendAccounts(SqliteSpendStore(tmp_path / "spend.db"), {"tenant-1": limit}),
        prices=Prices(default_tool_call_usd=cost, default_model_per_1k_tokens_usd=tokens, models={}),
        rate=SlidingWindowLimiter(rate, 60.0),
        owners=HookOwners(_owner_of),
    )


def _ask(
    tool: str = "lookup_ticket",
    agent: str = "ticket_lookup",
    arguments: dict[str, Any] | None = None,
    *,
    wf: str = "wf-1",
    tenant: str = "tenant-1",
    call_id: str = "c-1",
    ordinal: int = 0,
    **changes: Any,
) -> ToolAsk:
    args = {"ticket_id": "T-1"} if arguments is None else arguments
    ticket = issue_ticket(
        SUPERVISOR, ttl_s=3600, now=NOW, workflow_id=wf, tenant_id=tenant, agent=agent, step_version=3
    )
    fields: dict[str, Any] = {
        "step_ticket": ticket,
        "call_id": call_id,
        "workflow_id": wf,
        "tenant_id": tenant,
        "agent": agent,
        "tool": tool,
        "arguments_json": json.dumps(args),
        "arguments_sha256": hashlib.sha256(canonical_bytes(args)).hexdigest(),
        "idempotency_key": tool_call_key(wf, agent, tool, step_version=3, ordinal=ordinal),
        "step_version": 3,
    }
    fields.update(changes)
    return ToolAsk(**fields)


async def test_a_granted_read_is_authorized_with_a_grant_for_exactly_that_call(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    ask = _ask()
    verdict = await guard.decide(ask, now=NOW)
    assert verdict.authorized and verdict.code == "AUTHORIZED"
    assert verdict.policies == ("read-granted",) and verdict.policy_version == guard.policy_version
    assert verdict.grant is not None
    grant = check_grant(
        verdict.grant,
        KEYRING,
        expected={
            "workflow_id": "wf-1",
            "agent": "ticket_lookup",
            "step_version": 3,
            "tool": "lookup_ticket",
            "arguments_sha256": ask.arguments_sha256,
            "idempotency_key": ask.idempotency_key,
        },
        now=NOW + 1,
    )
    assert grant.policy_version == guard.policy_version and grant.expires_at == NOW + 60.0


@pytest.mark.parametrize(
    ("ask", "code", "failure_class", "says"),
    [
        (_ask(tool="delete_everything"), "UNKNOWN_TOOL", FailureClass.LOGIC, "there is no tool 'delete_everything'"),
        (_ask(tool="issue_refund"), "NOT_GRANTED", FailureClass.LOGIC, "is not granted 'issue_refund'"),
        (_ask(agent="impostor"), "UNKNOWN_AGENT", FailureClass.SYSTEMIC, "no workflow declares an agent"),
        (_ask(arguments={"ticket_id": "T-2"}), "CROSS_TENANT", None, "another tenant's record"),
        (_ask(arguments_sha256="0" * 64), "BAD_REQUEST", FailureClass.LOGIC, "does not match the arguments"),
        (_ask(arguments_json="[1, 2"), "BAD_REQUEST", FailureClass.LOGIC, "is not JSON"),
        (_ask(idempotency_key="wf-2:ticket_lookup:lookup_ticket:v3.0"), "BAD_REQUEST", FailureClass.LOGIC, "is not"),
        (_ask(step_version=4), "BAD_REQUEST", FailureClass.LOGIC, "names step v3, not v4"),
    ],
)
async def test_each_refusal_names_its_rule_says_what_to_do_and_carries_no_grant(
    tmp_path: Path, ask: ToolAsk, code: str, failure_class: FailureClass, says: str
) -> None:
    guard = _guard(tmp_path)
    verdict = await guard.decide(ask, now=NOW)
    assert not verdict.authorized and verdict.grant is None
    assert (verdict.code, verdict.failure_class) == (code, failure_class)
    assert says in verdict.reason, verdict.reason
    assert verdict.policy_version == guard.policy_version


async def test_an_irreversible_call_over_its_threshold_needs_approval_and_under_it_is_authorized(
    tmp_path: Path,
) -> None:
    guard = _guard(tmp_path)
    big = _ask("issue_refund", "refund_issuer", {"ticket_id": "T-1", "amount": 900.0}, call_id="big")
    verdict = await guard.decide(big, now=NOW)
    assert (verdict.code, verdict.failure_class, verdict.grant) == ("APPROVAL_REQUIRED", None, None)
    assert verdict.approval is not None and verdict.approval.action.arguments_json == big.arguments_json
    assert verdict.approval.queue == "support-leads" and verdict.approval.expires_at == NOW + 3600
    assert verdict.approval.required_approvals == 2 and verdict.approval.on_expiry == "reject"  # as declared
    small = _ask("issue_refund", "refund_issuer", {"ticket_id": "T-1", "amount": 20.0}, call_id="small")
    assert (await guard.decide(small, now=NOW)).policies == ("irreversible-granted",)


async def test_more_than_the_rate_in_the_window_halts_the_agent_and_the_window_slides(tmp_path: Path) -> None:
    guard = _guard(tmp_path, rate=3)
    verdicts = [await guard.decide(_ask(call_id=f"c{i}", ordinal=i), now=NOW + i) for i in range(4)]
    assert [v.code for v in verdicts] == ["AUTHORIZED"] * 3 + ["RATE_LIMITED"]
    assert verdicts[-1].failure_class is FailureClass.SYSTEMIC and verdicts[-1].rate_limited
    # Another agent of the same workflow, and the same agent a window later, are not held back.
    other = await guard.decide(_ask("preview_refund", "refund_preview", call_id="o"), now=NOW + 4)
    assert other.authorized
    assert (await guard.decide(_ask(call_id="later", ordinal=9), now=NOW + 61)).authorized


async def test_spend_is_reserved_per_call_a_redelivered_request_costs_once_and_the_limit_stops_calls(
    tmp_path: Path,
) -> None:
    guard = _guard(tmp_path, limit=1.0, cost=0.25)
    first = await guard.decide(_ask(call_id="c0"), now=NOW)
    assert first.authorized and first.cost_usd == 0.25
    again = await guard.decide(_ask(call_id="c0"), now=NOW)
    assert again is first  # the same verdict: not decided (nor charged) twice
    shares = [a.share for a in first.alerts]
    verdicts = [await guard.decide(_ask(call_id=f"c{i}", ordinal=i), now=NOW) for i in range(1, 6)]
    assert [v.code for v in verdicts] == ["AUTHORIZED"] * 3 + ["SPEND_LIMIT"] * 2
    shares += [a.share for v in verdicts for a in v.alerts]
    assert shares == [0.5, 0.8, 1.0]  # each once: 0.50 reached at the 2nd call, 0.80 and 1.00 at the 4th
    assert await _spent(guard) == pytest.approx(1.0)
    assert verdicts[-1].failure_class is FailureClass.SYSTEMIC and "pass the limit" in verdicts[-1].reason


async def test_a_call_asked_again_under_the_same_key_with_a_new_call_id_is_not_charged_again(tmp_path: Path) -> None:
    guard = _guard(tmp_path, limit=1.0, cost=0.5)
    assert (await guard.decide(_ask(call_id="first"), now=NOW)).authorized
    assert (await guard.decide(_ask(call_id="asked-again"), now=NOW)).authorized  # same key: its grant was lost
    assert await _spent(guard) == pytest.approx(0.5)


async def test_tokens_are_charged_once_per_decision_and_count_toward_the_alerts(tmp_path: Path) -> None:
    guard = _guard(tmp_path, limit=1.0, tokens=0.5)
    assert [a.share for a in await guard.charge_tokens("d-1", "tenant-1", "ticket_lookup", 1200, now=NOW)] == [0.5]
    alerts = await guard.charge_tokens("d-2", "tenant-1", "ticket_lookup", 400, now=NOW)
    assert [a.share for a in alerts] == [0.8]
    assert await guard.charge_tokens("d-2", "tenant-1", "ticket_lookup", 400, now=NOW) == []
    assert await _spent(guard) == pytest.approx(0.8)


async def test_remembered_verdicts_are_bounded(tmp_path: Path) -> None:
    guard = ToolCallGuard(
        workflows=load_workflows(),
        policies=Policies.load(default_workflow_dir()),
        signer=GUARD,
        keyring=KEYRING,
        spend=None,
        prices=Prices(),
        rate=SlidingWindowLimiter(10_000, 60.0),
        remember=5,
    )
    for i in range(20):
        await guard.decide(_ask(call_id=f"c{i}", ordinal=i), now=time.time())
    assert len(guard._recent) == 5


async def _spent(guard: ToolCallGuard) -> float:
    assert guard.spend is not None
    return await guard.spend.spent("tenant-1", "2027-01-15")


REPORTS = WorkflowSpec.model_validate(
    {
        "name": "reporting",
        "pattern": "pipeline",
        "autonomy_level": 3,
        "escalation": {"queue": "analysts", "sla_s": 600},
        "agents": [
            {
                "name": "analyst",
                "outputs": ["rows"],
                "tools": [
                    {
                        "name": "run_query",
                        "tier": "READ",
                        "result_key": "rows",
                        "query": {"argument": "sql", "tables": ["orders", "refunds"]},
                    }
                ],
            }
        ],
    }
)


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELECT o.id, r.amount FROM orders o JOIN refunds r ON r.order_id = o.id", "AUTHORIZED"),
        ("SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers)", "TABLE_NOT_ALLOWED"),
        ("WITH x AS (SELECT * FROM users) SELECT * FROM x", "TABLE_NOT_ALLOWED"),
        ("DROP TABLE orders", "TABLE_NOT_ALLOWED"),
    ],
)
async def test_a_query_tool_runs_only_on_its_allowed_tables(tmp_path: Path, sql: str, code: str) -> None:
    guard = ToolCallGuard(
        workflows={"reporting": REPORTS},
        policies=Policies.load(default_workflow_dir()),
        signer=GUARD,
        keyring=KEYRING,
        spend=None,
        prices=Prices(),
        rate=SlidingWindowLimiter(50, 60.0),
    )
    verdict = await guard.decide(_ask("run_query", "analyst", {"sql": sql}), now=NOW)
    assert verdict.code == code, verdict.reason
    if code != "AUTHORIZED":
        assert "nothing ran" in verdict.reason or "cannot be checked" in verdict.reason


def _ticket(signer: Identity, **changes: Any) -> str:
    binding: dict[str, Any] = {
        "workflow_id": "wf-1",
        "tenant_id": "tenant-1",
        "agent": "ticket_lookup",
        "step_version": 3,
    }
    return issue_ticket(signer, ttl_s=3600, now=NOW, **{**binding, **changes})


@pytest.mark.parametrize(
    ("ticket", "says"),
    [
        ("", "shows no step ticket"),
        (_ticket(ROGUE), "not by the supervisor"),
        (_ticket(SUPERVISOR, workflow_id="wf-other"), "workflow_id differ"),
        (_ticket(SUPERVISOR, tenant_id="tenant-2"), "tenant_id differ"),
        (_ticket(SUPERVISOR, step_version=2), "step_version differ"),
        (_ticket(SUPERVISOR).replace('"agent": "ticket_lookup"', '"agent": "refund_issuer"'), "does not verify"),
    ],
)
async def test_only_a_step_the_supervisor_opened_may_call_a_tool(tmp_path: Path, ticket: str, says: str) -> None:
    """A rogue agent cannot invent a workflow, another tenant or another step to get grants for."""
    verdict = await _guard(tmp_path).decide(_ask(step_ticket=ticket), now=NOW)
    assert (verdict.code, verdict.failure_class, verdict.grant) == ("STEP_NOT_OPEN", FailureClass.SYSTEMIC, None)
    assert says in verdict.reason, verdict.reason


async def test_an_approval_permits_exactly_the_action_approved_and_nothing_else(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    big = _ask("issue_refund", "refund_issuer", {"ticket_id": "T-1", "amount": 900.0}, call_id="ask-1")
    asked = (await guard.decide(big, now=NOW)).approval
    assert asked is not None and asked.approval_id == approval_id_of(asked.action)

    def token(signer: Identity, digest: str, expires_at: float = NOW + 600) -> str:
        return issue_approval_token(
            signer, approval_id=asked.approval_id, action_digest=digest, decided_by=("alice",), expires_at=expires_at
        )

    approved = replace(big, call_id="ask-2", approval_token=token(APPROVALS, asked.action.digest()))
    verdict = await guard.decide(approved, now=NOW + 1)
    assert (verdict.code, verdict.policies) == ("AUTHORIZED", ("irreversible-granted",))
    # The same approval shown with another amount, or signed by anyone but the approval service, or expired:
    # a new approval is asked, and the reason says why the one shown did not apply.
    other = {"ticket_id": "T-1", "amount": 901.0}
    changed = replace(
        _ask("issue_refund", "refund_issuer", other, call_id="ask-3"),
        approval_token=token(APPROVALS, asked.action.digest()),
    )
    forged = replace(big, call_id="ask-4", approval_token=token(ROGUE, asked.action.digest()))
    late = replace(big, call_id="ask-5", approval_token=token(APPROVALS, asked.action.digest(), NOW - 1))
    for ask, says in [(changed, "another action"), (forged, "not by the approvals"), (late, "expired")]:
        refused = await guard.decide(ask, now=NOW + 1)
        assert refused.code == "APPROVAL_REQUIRED" and "does not apply" in refused.reason and says in refused.reason
    assert (await guard.decide(changed, now=NOW + 1)).approval.approval_id != asked.approval_id  # type: ignore[union-attr]
