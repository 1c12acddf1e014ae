"""The guard's core, as libraries: Cedar decisions on tool calls, and the signed single-use grants a tool needs.

A rogue agent that skips the guard, replays an old grant, changes the arguments after the grant, or signs a
grant itself is refused where the tool runs, and nothing runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from baton import identity
from baton.contracts.models import PermissionTier
from baton.identity import Identity, Keyring
from baton.ledger import Ledger
from baton.policy.decisions import Policies, PolicyLoadError, ToolCallFacts, Verdict
from baton.policy.grants import GrantRefusedError, SignedGrant, issue_grant
from baton.tools import PythonToolProvider, ToolRegistry, python_tool, tools_of
from baton.tools.executor import StepTools, arguments_sha256
from baton.workflows import ToolSpec, default_workflow_dir

GUARD = Identity.generate(identity.POLICY_GUARD)
ROGUE = Identity.generate(identity.agent_role("payer"))
KEYRING = Keyring.of([GUARD, ROGUE])
POLICIES = Policies.load(default_workflow_dir())


def _facts(**changes: object) -> ToolCallFacts:
    base = ToolCallFacts(
        agent="refund_issuer",
        tool="issue_refund",
        tier=PermissionTier.IRREVERSIBLE,
        tenant_id="tenant-1",
        workflow_type="support_refund",
        granted=True,
        needs_approval=False,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "verdict", "policies"),
    [
        (_facts(), Verdict.AUTHORIZED, ("irreversible-granted",)),
        (_facts(tier=PermissionTier.READ, tool="lookup_ticket"), Verdict.AUTHORIZED, ("read-granted",)),
        (_facts(needs_approval=True), Verdict.APPROVAL_REQUIRED, ()),
        (_facts(needs_approval=True, approved=True), Verdict.AUTHORIZED, ("irreversible-granted",)),
        (_facts(granted=False, tool="delete_all_records"), Verdict.DENIED, ("only-granted-tools",)),
        (_facts(cross_tenant=True), Verdict.DENIED, ("no-cross-tenant",)),
        (_facts(cross_tenant=True, needs_approval=True), Verdict.DENIED, ("no-cross-tenant",)),
    ],
)
def test_the_reference_policies_decide_each_call_and_name_the_policy_and_version(
    facts: ToolCallFacts, verdict: Verdict, policies: tuple[str, ...]
) -> None:
    decision = POLICIES.decide(facts)
    assert (decision.verdict, decision.policies) == (verdict, policies)
    assert decision.policy_version == POLICIES.version and decision.policy_version.startswith("sha256:")


def test_no_matching_policy_denies_by_default(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "reads.cedar").write_text(
        '@id("reads") permit (principal, action, resource) when { context.tier == "READ" };'
    )
    decision = Policies.load(tmp_path).decide(_facts())
    assert decision.verdict is Verdict.DENIED and "denied by default" in decision.reason


def test_a_policy_file_that_is_not_cedar_is_named(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "broken.cedar").write_text("permit (principal, action, resource")
    with pytest.raises(PolicyLoadError, match=r"broken\.cedar: not valid Cedar"):
        Policies.load(tmp_path)


# -- grants, checked where the tool runs ------------------------------------------------------------------


class Payments:
    def __init__(self) -> None:
        self.paid: list[float] = []

    @python_tool(version="1", tier="IRREVERSIBLE")
    def pay(self, invoice_id: str, amount: float) -> dict[str, float]:
        """Pay an invoice."""
        self.paid.append(amount)
        return {"paid": amount}

    @python_tool(version="1", tier="READ", idempotent=True)
    def balance(self, invoice_id: str) -> dict[str, float]:
        """What is owed."""
        self.paid.append(0.0)
        return {"owed": 10.0}


PAY = ToolSpec(name="pay", version="1", tier=PermissionTier.IRREVERSIBLE, result_key="payment")
BALANCE = ToolSpec(name="balance", version="1", tier=PermissionTier.READ, result_key="balance")
ARGS = {"invoice_id": "inv-1", "amount": 120.0}


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


async def _tools(payments: Payments, ledger: Ledger, version: int = 3) -> StepTools:
    registry = ToolRegistry([PythonToolProvider(tools_of(payments))])
    await registry.start()
    return StepTools(
        registry, ledger, workflow_id="wf-1", agent="payer", tenant_id="acme", step_version=version, grants=KEYRING
    )


def _grant(
    tools: StepTools, spec: ToolSpec, arguments: dict[str, object], *, signer: Identity = GUARD, ttl_s: float = 30.0
) -> SignedGrant:
    return issue_grant(
        signer,
        ttl_s=ttl_s,
        now=time.time(),
        workflow_id=tools.workflow_id,
        tenant_id=tools.tenant_id,
        agent=tools.agent,
        step_version=tools.step_version,
        tool=spec.name,
        arguments_sha256=arguments_sha256(arguments),
        idempotency_key=tools.key(spec.name, 0),
        policy_version=POLICIES.version,
    )


async def test_a_call_with_the_guards_grant_runs_once(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _tools(payments, ledger)
    run = await tools.run(PAY, ARGS, 0, _grant(tools, PAY, ARGS))
    assert run.result == {"paid": 120.0} and payments.paid == [120.0]


async def test_a_rogue_agent_that_skips_the_guard_runs_nothing(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _tools(payments, ledger)
    with pytest.raises(GrantRefusedError) as refused:
        await tools.run(PAY, ARGS, 0)
    assert refused.value.code == "GRANT_MISSING" and payments.paid == []
    assert ledger.verify().counts["tool_calls"] == 0  # the intent was withdrawn: nothing ran


async def test_a_replayed_grant_is_refused(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _tools(payments, ledger)
    grant = _grant(tools, BALANCE, {"invoice_id": "inv-1"})
    await tools.run(BALANCE, {"invoice_id": "inv-1"}, 0, grant)
    with pytest.raises(GrantRefusedError) as reused:
        await tools.run(BALANCE, {"invoice_id": "inv-1"}, 0, grant)
    assert reused.value.code == "GRANT_REUSED" and payments.paid == [0.0]


async def test_arguments_changed_after_the_grant_are_refused(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _tools(payments, ledger)
    grant = _grant(tools, PAY, ARGS)
    with pytest.raises(GrantRefusedError, match="arguments_sha256") as changed:
        await tools.run(PAY, {**ARGS, "amount": 1200.0}, 0, grant)
    assert changed.value.code == "GRANT_MISMATCH" and payments.paid == []


async def test_a_grant_for_another_step_or_signed_by_anyone_but_the_guard_is_refused(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _tools(payments, ledger)
    earlier_step = _grant(await _tools(payments, ledger, version=1), PAY, ARGS)
    with pytest.raises(GrantRefusedError, match="idempotency_key, step_version") as other:
        await tools.run(PAY, ARGS, 0, earlier_step)
    assert other.value.code == "GRANT_MISMATCH"
    with pytest.raises(GrantRefusedError, match="not by the policy guard") as self_signed:
        await tools.run(PAY, ARGS, 0, _grant(tools, PAY, ARGS, signer=ROGUE))
    assert self_signed.value.code == "GRANT_FORGED"
    genuine = _grant(tools, PAY, ARGS)
    tampered = dataclasses.replace(genuine, grant=dataclasses.replace(genuine.grant, expires_at=1e12))
    with pytest.raises(GrantRefusedError) as forged:
        await tools.run(PAY, ARGS, 0, tampered)
    assert forged.value.code == "GRANT_FORGED" and payments.paid == []


async def test_an_expired_grant_is_refused(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _tools(payments, ledger)
    with pytest.raises(GrantRefusedError) as expired:
        await tools.run(PAY, ARGS, 0, _grant(tools, PAY, ARGS, ttl_s=-1))
    assert expired.value.code == "GRANT_EXPIRED" and payments.paid == []


def test_a_grant_travels_as_json_and_still_verifies() -> None:
    tools_like = SignedGrant.from_json(
        issue_grant(
            GUARD,
            ttl_s=30,
            now=time.time(),
            workflow_id="wf",
            tenant_id="acme",
            agent="a",
            step_version=1,
            tool="t",
            arguments_sha256="0" * 64,
            idempotency_key="k",
            policy_version="v",
        ).to_json()
    )
    assert KEYRING.verify(tools_like.key_id.encode(), tools_like.signature, tools_like.grant.message()) == (
        identity.POLICY_GUARD
    )
