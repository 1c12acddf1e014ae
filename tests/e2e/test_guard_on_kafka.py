"""The policy guard as its own process on a real Kafka broker, with the supervisor, the validator, the auditor and
the refund workflow's agents as processes too.

- A rogue agent process (it holds the refund issuer's signing key) calls the tool server directly: without a
  grant, with a grant it signed itself, replaying the guard's grant, with the arguments changed after the grant.
  The tool refuses each with 403 and the world holds exactly the one refund the guard permitted.
- Asking for a tool outside the agent's grant, another tenant's record, or a tool that does not exist is denied
  by the guard process, and nothing runs.
- PII planted in a ticket never appears in clear in the audit store nor in any service's log; instructions
  planted in a ticket escalate the workflow; every workflow gets exactly its expected outcome and nothing is
  dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from baton import identity, topics
from baton.audit.keys import encode_signing_key, generate_signing_key
from baton.bus.base import BusRecord
from baton.bus.kafka import KafkaBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import (
    Event,
    GuardFlagged,
    GuardFlagKind,
    ToolCallAuthorized,
    WorkflowEscalated,
)
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.guard_client import GuardClient
from baton.handoff import tool_call_key
from baton.identity import Identity
from baton.ledger import Ledger
from baton.messaging import EventBus
from baton.policy.grants import GrantVerifier, SignedGrant, issue_grant, issue_ticket
from baton.policy.spend import SpendAccounts, utc_day
from baton.policy.spend_sqlite import SqliteSpendStore
from baton.testbed.processes import ServiceProcesses
from baton.tools import PythonToolProvider, ToolRegistry
from baton.tools.base import ToolError
from baton.tools.executor import CallToAsk, GuardDeniedError, arguments_sha256
from baton.tools.http import HttpToolProvider
from baton.tools.serve import http_configs, tool_app
from baton.workflows import load_workflows
from baton_demo.world import World
from baton_demo.world_tools import world_tools
from tests.component.test_screened_tool_results import INJECTED, PII, PLANTED, small_tickets
from tests.component.test_spend_limits_in_the_mesh import LIMIT as SPEND_LIMIT
from tests.component.test_spend_limits_in_the_mesh import TENANTS as SPEND_TENANTS
from tests.contract.tool_kit import serve
from tests.harness.identities import DOMAIN, trust, write_keys
from tests.harness.kafka_broker import KafkaBroker

pytestmark = pytest.mark.e2e

OPENER = DOMAIN.identities[identity.SUPERVISOR]  # signs the tickets of the steps the rogue is given
AGENTS = [a.name for a in load_workflows()["support_refund"].agents]


def _env(broker: KafkaBroker, tmp_path: Path) -> dict[str, str]:
    return {
        "BATON_BUS": "kafka",
        # No approval service runs here: a refund that needs a human ends escalated to its queue.
        "BATON_SUPERVISOR_AWAIT_APPROVALS": "false",
        "BATON_KAFKA_BOOTSTRAP": broker.bootstrap,
        "BATON_KEYS_DIR": str(write_keys(tmp_path / "keys")),
        "BATON_LOG_LEVEL": "INFO",
        "BATON_WORLD_DB": str(tmp_path / "world.db"),
        "BATON_AGENT_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_HANDOFF_VALIDATOR_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_POLICY_GUARD_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_SUPERVISOR_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_AUDITOR_SQLITE_PATH": str(tmp_path / "audit.db"),
        "BATON_AUDITOR_SIGNING_KEY": encode_signing_key(generate_signing_key()),
        "BATON_AUDITOR_ANCHOR_FILE": str(tmp_path / "anchors.jsonl"),
    }


async def _start(
    broker: KafkaBroker, tmp_path: Path, extra: dict[str, str] | None = None
) -> tuple[ServiceProcesses, KafkaBus]:
    """Every service of the refund workflow as its own process, and a bus for the test."""
    (tmp_path / "logs").mkdir()
    procs = ServiceProcesses(env={**_env(broker, tmp_path), **(extra or {})}, logdir=tmp_path / "logs")
    bus = KafkaBus(broker.bootstrap, client_id="guard-e2e")
    await bus.start()
    await bus.create_topics([*topics.CORE_TOPICS, *(topics.agent_steps(a) for a in AGENTS)])
    for service in ("supervisor", "handoff-validator", "policy-guard", "auditor"):
        procs.start(service, service)
    for kind in AGENTS:
        procs.start(f"agent-{kind}", "agent", "--kind", kind)
    return procs, bus


def _call(
    supervisor: Identity, wf: str, tenant: str, agent: str, tool: str, arguments: dict[str, Any], ordinal: int = 0
) -> CallToAsk:
    """A call of a step the supervisor opened (its ticket signed by the supervisor's identity)."""
    key = tool_call_key(wf, agent, tool, step_version=2, ordinal=ordinal)
    ticket = issue_ticket(
        supervisor, ttl_s=3600, now=time.time(), workflow_id=wf, tenant_id=tenant, agent=agent, step_version=2
    )
    return CallToAsk(wf, tenant, agent, tool, arguments, key, 2, ticket)


async def test_the_guard_process_on_kafka_holds_against_a_rogue_agent_and_keeps_pii_out(
    own_broker: KafkaBroker, tmp_path: Path
) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=40, seed=5)
    pii_ticket, injected_ticket, plain_ticket, rogue_ticket = small_tickets(world, 4)
    world.rewrite_ticket(pii_ticket, PLANTED)
    world.rewrite_ticket(injected_ticket, INJECTED)
    procs, bus = await _start(own_broker, tmp_path)
    serde = AvroSerde(LocalSchemaRegistry())
    served = ToolRegistry([PythonToolProvider(world_tools(world), name="world")])
    await served.start()
    tool_side = Ledger(tmp_path / "tool-side.db")
    try:

        def as_role(role: str) -> EventBus:
            return EventBus(bus=bus, serde=serde, producer=f"e2e-{role}", trust=trust(role))

        # -- workflows: PII, injection, plain -------------------------------------------------------------
        client = BatonClient(as_role(identity.CLIENT))
        tasks = {"pii": pii_ticket, "injected": injected_ticket, "plain": plain_ticket}
        for wf, ticket in tasks.items():
            tenant = world.tenant_of("ticket_id", ticket)
            assert tenant is not None
            await client.submit("support_refund", {"ticket_id": ticket}, tenant_id=tenant, workflow_id=wf)
        outcomes: dict[str, Outcome] = {}
        seen: list[str] = []

        async def collect() -> None:
            async with contextlib.aclosing(client.outcomes()) as stream:
                async for outcome in stream:
                    seen.append(outcome.envelope.workflow_id)
                    outcomes.setdefault(outcome.envelope.workflow_id, outcome)
                    if len(outcomes) == len(tasks):
                        return

        try:
            await asyncio.wait_for(collect(), timeout=180)
        except TimeoutError:
            pytest.fail(f"outcomes {sorted(outcomes)}; dead processes {procs.dead()}\n{procs.tail('policy-guard')}")
        assert {wf: type(o).__name__ for wf, o in outcomes.items()} == {
            "pii": "WorkflowCompleted",
            "injected": "WorkflowEscalated",
            "plain": "WorkflowCompleted",
        }
        assert sorted(seen) == sorted(tasks)  # one outcome each
        escalated = outcomes["injected"]
        assert isinstance(escalated, WorkflowEscalated) and escalated.reason_code == "INJECTION_SUSPECTED"

        # -- a rogue agent process against a tool server that checks grants ---------------------------------
        tenant = world.tenant_of("ticket_id", rogue_ticket)
        assert tenant is not None
        amount = world.preview_refund(rogue_ticket)["amount"]
        args = {"ticket_id": rogue_ticket, "amount": amount}
        refunds_before = world.verify().counts["refunds"]
        app = tool_app(served, verifier=GrantVerifier(DOMAIN.keyring, tool_side.consume_grant))
        issuer = GuardClient(as_role(identity.agent_role("refund_issuer")), timeout_s=60)
        await issuer.start()
        async with serve(app) as url:
            rogue = ToolRegistry([HttpToolProvider(http_configs(url, served), name="tools")])
            await rogue.start()

            async def refund(arguments: dict[str, Any], key: str, grant: SignedGrant | None) -> dict[str, Any]:
                return await rogue.invoke(
                    "issue_refund",
                    arguments,
                    idempotency_key=key,
                    tenant_id=tenant,
                    workflow_id="wf-rogue",
                    agent="refund_issuer",
                    grant=grant.to_json() if grant is not None else None,
                )

            call = _call(
                DOMAIN.identities[identity.SUPERVISOR], "wf-rogue", tenant, "refund_issuer", "issue_refund", args
            )
            with pytest.raises(ToolError, match="GRANT_MISSING"):
                await refund(args, call.idempotency_key, None)  # skipped the guard
            forged = issue_grant(
                DOMAIN.identities[identity.agent_role("refund_issuer")],
                ttl_s=60,
                now=time.time(),
                workflow_id="wf-rogue",
                tenant_id=tenant,
                agent="refund_issuer",
                step_version=2,
                tool="issue_refund",
                arguments_sha256=arguments_sha256(args),
                idempotency_key=call.idempotency_key,
                policy_version="mine",
            )
            with pytest.raises(ToolError, match="GRANT_FORGED"):
                await refund(args, call.idempotency_key, forged)  # signed its own
            grant = await issuer.ask(call)  # the guard process, over Kafka
            assert (await refund(args, call.idempotency_key, grant))["amount"] == amount
            with pytest.raises(ToolError, match="GRANT_REUSED"):
                await refund(args, call.idempotency_key, grant)  # replayed
            second = _call(
                DOMAIN.identities[identity.SUPERVISOR],
                "wf-rogue",
                tenant,
                "refund_issuer",
                "issue_refund",
                args,
                ordinal=1,
            )
            fresh = await issuer.ask(second)
            with pytest.raises(ToolError, match="GRANT_MISMATCH"):
                await refund({**args, "amount": amount + 100}, second.idempotency_key, fresh)  # changed after
            await rogue.close()
        await issuer.stop()
        assert world.verify().counts["refunds"] == refunds_before + 1

        # -- denials: outside the grant, another tenant's record, no such tool -------------------------------
        reader = GuardClient(as_role(identity.agent_role("ticket_lookup")), timeout_s=60)
        await reader.start()
        other = next(f"tenant-{i}" for i in range(3) if f"tenant-{i}" != tenant)
        for tool, asking_tenant, code in [
            ("issue_refund", tenant, "NOT_GRANTED"),
            ("lookup_ticket", other, "CROSS_TENANT"),
            ("drop_all_tables", tenant, "UNKNOWN_TOOL"),
        ]:
            with pytest.raises(GuardDeniedError) as denied:
                await reader.ask(
                    _call(
                        DOMAIN.identities[identity.SUPERVISOR],
                        "wf-deny",
                        asking_tenant,
                        "ticket_lookup",
                        tool,
                        {"ticket_id": rogue_ticket},
                    )
                )
            assert denied.value.code == code
        await reader.stop()
        assert world.verify().counts["refunds"] == refunds_before + 1
        dead_letters = sum((await bus.end_offsets(topics.DEAD_LETTER)).values())
        assert dead_letters == 0
    finally:
        procs.stop_all()  # the auditor writes what it holds and a final anchor as it stops
        await served.close()
        tool_side.close()
        await bus.stop()

    # Nowhere in clear: not in the audit store, not in any service's log (agents and the guard log through the
    # PII filter; none of the others ever sees a tool result).
    with sqlite3.connect(tmp_path / "audit.db") as db:
        audit = "\n".join(db.iterdump())
    assert "PII_REDACTED" in audit and "INJECTION_FLAGGED" in audit and "<EMAIL_ADDRESS>" in audit
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log")}
    assert len(logs) == 4 + len(AGENTS)
    for kind, value in PII.items():
        assert value not in audit, f"{kind} in clear in the audit"
        leaked = [name for name, text in logs.items() if value in text]
        assert not leaked, f"{kind} in clear in {leaked}"
    world.close()


async def test_100_concurrent_workflows_of_one_tenant_end_within_its_daily_limit_on_kafka(
    own_broker: KafkaBroker, tmp_path: Path
) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=300, seed=11)
    (tmp_path / "tenants.yaml").write_text(SPEND_TENANTS)
    tickets = [t for t in world.ticket_ids() if world.tenant_of("ticket_id", t) == "tenant-0"][:100]
    assert len(tickets) == 100
    tenants = str(tmp_path / "tenants.yaml")
    procs, bus = await _start(
        own_broker,
        tmp_path,
        {"BATON_POLICY_GUARD_TENANTS_FILE": tenants, "BATON_SUPERVISOR_TENANTS_FILE": tenants},
    )
    serde = AvroSerde(LocalSchemaRegistry())
    try:
        client = BatonClient(EventBus(bus=bus, serde=serde, producer="e2e-client", trust=trust(identity.CLIENT)))
        for i, ticket in enumerate(tickets):
            await client.submit("support_refund", {"ticket_id": ticket}, tenant_id="tenant-0", workflow_id=f"sp-{i}")
        outcomes: dict[str, Outcome] = {}
        seen: Counter[str] = Counter()

        async def collect() -> None:
            async with contextlib.aclosing(client.outcomes()) as stream:
                async for outcome in stream:
                    if not outcome.envelope.workflow_id.startswith("sp-"):
                        continue  # the module's broker also holds the first test's outcomes
                    seen[outcome.envelope.workflow_id] += 1
                    outcomes.setdefault(outcome.envelope.workflow_id, outcome)
                    if len(outcomes) == len(tickets):
                        return

        try:
            await asyncio.wait_for(collect(), timeout=300)
        except TimeoutError:
            pytest.fail(f"{len(outcomes)} of 100 outcomes; dead processes {procs.dead()}")
        verdicts: list[Event] = []

        async def keep(record: BusRecord) -> None:
            verdicts.append(await serde.decode(record.value))

        await bus.replay([topics.TOOL_VERDICTS, topics.GUARD_FLAGS], keep)
        dead_letters = sum((await bus.end_offsets(topics.DEAD_LETTER)).values())
    finally:
        procs.stop_all()
        await bus.stop()

    def key(outcome: Outcome) -> str:
        code = getattr(outcome, "reason_code", "")
        return f"{type(outcome).__name__}:{code}" if code else type(outcome).__name__

    kinds = Counter(key(o) for o in outcomes.values())
    assert sum(kinds.values()) == 100 and set(seen.values()) == {1}, (kinds, seen)
    assert set(kinds) <= {
        "WorkflowCompleted",
        "WorkflowEscalated:APPROVAL_REQUIRED",
        "WorkflowHalted:DENIED_SPEND_LIMIT",
        "WorkflowHalted:ADMISSION_SPEND_EXHAUSTED",
    }, kinds
    assert kinds["WorkflowHalted:DENIED_SPEND_LIMIT"] > 0, kinds
    mine = [v for v in verdicts if v.envelope.workflow_id.startswith("sp-")]
    authorized = [v for v in mine if isinstance(v, ToolCallAuthorized)]
    store = SqliteSpendStore(tmp_path / "spend.db")
    spent = await SpendAccounts(store, {"tenant-0": SPEND_LIMIT}).spent("tenant-0", utc_day(time.time()))
    await store.close()
    assert spent <= SPEND_LIMIT + 1e-9 and spent == pytest.approx(sum(a.cost_usd for a in authorized))
    shares = sorted(
        v.figures["share"] for v in mine if isinstance(v, GuardFlagged) and v.kind is GuardFlagKind.SPEND_ALERT
    )
    assert shares.count(0.5) == 1 and shares.count(0.8) == 1 and shares.count(1.0) <= 1, shares
    report = world.verify()
    assert report.ok, report.problems
    assert report.counts["refunds"] == sum(1 for a in authorized if a.tool == "issue_refund")
    assert dead_letters == 0
    world.close()
