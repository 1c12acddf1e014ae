"""The policy guard as a service on the bus, and tools that check its grants on their own side.

A rogue agent process (it holds an agent's signing key, so everything it publishes verifies) that calls a tool
server directly without asking the guard, replays a grant, changes the arguments after the grant, or signs a
grant itself is refused by the tool with 403, and the world is unchanged. Asking for a tool outside the agent's
grant, for another tenant's record, or for a tool that does not exist is denied by the guard and nothing runs.
An agent that speaks for another agent, or a request that cannot be decoded, is dead-lettered and the guard
keeps answering.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.contracts.models import DeadLettered, ToolCallDenied, ToolCallRequested
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.guard_client import GuardClient
from baton.handoff import tool_call_key
from baton.identity import Identity, TrustDomain, all_roles
from baton.ledger import Ledger
from baton.messaging import EventBus
from baton.policy.grants import GrantVerifier, SignedGrant, issue_grant, issue_ticket
from baton.policy.ownership import HookOwners
from baton.runtime import RuntimeSettings
from baton.tools import PythonToolProvider, ToolRegistry
from baton.tools.base import ToolError
from baton.tools.executor import CallToAsk, GuardDeniedError, arguments_sha256
from baton.tools.http import HttpToolProvider
from baton.tools.serve import http_configs, tool_app
from baton.workflows import agent_kinds, load_workflows
from baton_demo.world import OWNED_ARGUMENTS, World
from baton_demo.world_tools import world_tools
from services.policy_guard import app as guard_app
from services.policy_guard.config import Settings as GuardSettings
from tests.contract.tool_kit import serve
from tests.harness.collect import Collector


@dataclass
class Setup:
    bus: EmbeddedBus
    trust: TrustDomain
    world: World
    guard: guard_app.PolicyGuardApp
    serde: AvroSerde

    @property
    def supervisor(self) -> Identity:
        """Who opens steps (signs their tickets)."""
        return self.trust.identities[identity.SUPERVISOR]

    def events(self, role: str) -> EventBus:
        return EventBus(bus=self.bus, serde=self.serde, producer=f"{role}@test", trust=self.trust.trust(role))

    async def client(self, agent: str) -> GuardClient:
        client = GuardClient(self.events(identity.agent_role(agent)), timeout_s=10)
        await client.start()
        return client


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    bus = EmbeddedBus()
    trust = TrustDomain.generate(all_roles(agent_kinds(load_workflows())))
    world = World(tmp_path / "world.db")
    world.seed(customers=30, seed=3)
    serde = AvroSerde(LocalSchemaRegistry())
    events = EventBus(bus=bus, serde=serde, producer="policy-guard@test", trust=trust.trust(identity.POLICY_GUARD))
    guard = await guard_app.start(
        events,
        GuardSettings(runtime=RuntimeSettings(bus="embedded"), spend_sqlite_path=tmp_path / "spend.db"),
        owners=HookOwners(world.tenant_of, arguments=sorted(OWNED_ARGUMENTS)),
    )
    yield Setup(bus, trust, world, guard, serde)
    await guard.stop()
    await bus.stop()
    world.close()


def _small_ticket(world: World) -> tuple[str, str, float]:
    for ticket in world.ticket_ids():
        amount = world.preview_refund(ticket)["amount"]
        if 0 < amount <= 500:
            owner = world.tenant_of("ticket_id", ticket)
            assert owner is not None
            return ticket, owner, amount
    raise AssertionError("the seeded world has no small refund")


def _call(
    supervisor: Identity, wf: str, tenant: str, agent: str, tool: str, arguments: dict[str, Any], ordinal: int = 0
) -> CallToAsk:
    """A call of a step the supervisor opened (its ticket signed by the supervisor's identity)."""
    key = tool_call_key(wf, agent, tool, step_version=2, ordinal=ordinal)
    ticket = issue_ticket(
        supervisor, ttl_s=3600, now=time.time(), workflow_id=wf, tenant_id=tenant, agent=agent, step_version=2
    )
    return CallToAsk(wf, tenant, agent, tool, arguments, key, 2, ticket)


async def test_a_rogue_agent_process_cannot_run_a_tool_around_the_guard(setup: Setup, tmp_path: Path) -> None:
    world = setup.world
    served = ToolRegistry([PythonToolProvider(world_tools(world), name="world")])
    await served.start()
    tool_ledger = Ledger(tmp_path / "tool-side.db")  # the tool server's own record of used grants
    app = tool_app(served, verifier=GrantVerifier(setup.trust.keyring, tool_ledger.consume_grant))
    ticket, tenant, amount = _small_ticket(world)
    args = {"ticket_id": ticket, "amount": amount}
    async with serve(app) as url:
        # The rogue process: the refund issuer's key and the tool server's address, nothing else.
        rogue = ToolRegistry([HttpToolProvider(http_configs(url, served), name="tools")])
        await rogue.start()
        client = await setup.client("refund_issuer")

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
            setup.trust.identities[identity.SUPERVISOR], "wf-rogue", tenant, "refund_issuer", "issue_refund", args
        )
        # 1. Skips the guard: no grant.
        with pytest.raises(ToolError, match="GRANT_MISSING") as missing:
            await refund(args, call.idempotency_key, None)
        assert missing.value.code == "HTTP_403"
        # 2. Signs a grant itself with its own (valid, agent) key.
        forged = issue_grant(
            setup.trust.identities[identity.agent_role("refund_issuer")],
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
            await refund(args, call.idempotency_key, forged)
        assert world.verify().counts["refunds"] == 0
        # The guard's grant for exactly this call runs it, once.
        grant = await client.ask(call)
        assert (await refund(args, call.idempotency_key, grant))["amount"] == amount
        assert world.verify().counts["refunds"] == 1
        # 3. Replays the grant it was given.
        with pytest.raises(ToolError, match="GRANT_REUSED"):
            await refund(args, call.idempotency_key, grant)
        # 4. Changes the arguments after the grant (a bigger amount; another ticket).
        second = _call(
            setup.trust.identities[identity.SUPERVISOR],
            "wf-rogue",
            tenant,
            "refund_issuer",
            "issue_refund",
            args,
            ordinal=1,
        )
        fresh = await client.ask(second)
        with pytest.raises(ToolError, match="GRANT_MISMATCH"):
            await refund({**args, "amount": amount + 1}, second.idempotency_key, fresh)
        other = next(t for t in world.ticket_ids() if t != ticket and world.tenant_of("ticket_id", t) == tenant)
        with pytest.raises(ToolError, match="GRANT_MISMATCH"):
            await refund({**args, "ticket_id": other}, second.idempotency_key, fresh)
        # ... or to another key than the one it was granted for.
        with pytest.raises(ToolError, match="GRANT_MISMATCH"):
            await refund(args, call.idempotency_key + "9", fresh)
        report = world.verify()
        assert report.ok, report.problems
        assert report.counts["refunds"] == 1
        await client.stop()
        await rogue.close()
    await served.close()
    tool_ledger.close()


@pytest.mark.parametrize(
    ("agent", "tool", "foreign", "code"),
    [
        ("ticket_lookup", "issue_refund", False, "NOT_GRANTED"),
        ("ticket_lookup", "lookup_ticket", True, "CROSS_TENANT"),
        ("ticket_lookup", "drop_all_tables", False, "UNKNOWN_TOOL"),
    ],
)
async def test_a_call_outside_the_grant_another_tenants_record_or_an_unknown_tool_is_denied(
    setup: Setup, agent: str, tool: str, foreign: bool, code: str
) -> None:
    ticket, tenant, amount = _small_ticket(setup.world)
    other_tenant = next(f"tenant-{i}" for i in range(3) if f"tenant-{i}" != tenant)
    client = await setup.client(agent)
    denied: Collector[ToolCallDenied] = Collector()

    async def keep(record: BusRecord) -> None:
        event = await setup.serde.decode(record.value)
        if isinstance(event, ToolCallDenied):
            await denied.add(event)

    await setup.bus.subscribe([topics.TOOL_VERDICTS], group_id=None, handler=keep)
    call = _call(
        setup.trust.identities[identity.SUPERVISOR],
        "wf-deny",
        other_tenant if foreign else tenant,
        agent,
        tool,
        {"ticket_id": ticket, "amount": amount},
    )
    with pytest.raises(GuardDeniedError) as refusal:
        await client.ask(call)
    assert refusal.value.code == code
    assert "policy sha256:" in str(refusal.value)
    first = (await denied.wait_for_count(1))[0]
    assert first.reason_code == code and first.policy_version.startswith("sha256:")
    assert setup.world.verify().counts["refunds"] == 0
    assert setup.guard.handlers.authorized == 0 and setup.guard.handlers.denied == {code: 1}
    await client.stop()


async def test_an_agent_speaking_for_another_and_an_undecodable_request_are_dead_lettered_and_the_guard_goes_on(
    setup: Setup,
) -> None:
    ticket, tenant, _ = _small_ticket(setup.world)
    dead: Collector[DeadLettered] = Collector()

    async def keep(record: BusRecord) -> None:
        event = await setup.serde.decode(record.value)
        assert isinstance(event, DeadLettered)
        await dead.add(event)

    await setup.bus.subscribe([topics.DEAD_LETTER], group_id=None, handler=keep)
    # The ticket reader's key, claiming to be the refund issuer (which may issue refunds).
    impostor = setup.events(identity.agent_role("ticket_lookup"))
    args = {"ticket_id": ticket, "amount": 5.0}
    key = tool_call_key("wf-imp", "refund_issuer", "issue_refund", step_version=2, ordinal=0)
    await impostor.publish(
        topics.TOOL_REQUESTS,
        ToolCallRequested(
            envelope=impostor.envelope(workflow_id="wf-imp", tenant_id=tenant),
            call_id="impersonated",
            agent="refund_issuer",
            tool="issue_refund",
            arguments_json=json.dumps(args),
            idempotency_key=key,
            step_version=2,
            arguments_sha256=arguments_sha256(args),
        ),
    )
    await setup.bus.publish(topics.TOOL_REQUESTS, b"\x00garbage", key=b"wf-imp")  # unsigned
    await impostor.publish_encoded(topics.TOOL_REQUESTS, b"\x00garbage", workflow_id="wf-imp")  # signed, not Avro
    # The same partition keeps moving: an honest request after both is answered.
    client = await setup.client("ticket_lookup")
    grant = await client.ask(
        _call(
            setup.trust.identities[identity.SUPERVISOR],
            "wf-imp",
            tenant,
            "ticket_lookup",
            "lookup_ticket",
            {"ticket_id": ticket},
        )
    )
    assert grant.grant.tool == "lookup_ticket"
    reasons = dict(sorted((d.reason_code, d.reason) for d in await dead.wait_for_count(3)))
    assert sorted(reasons) == ["NOT_AUTHORIZED", "UNKNOWN_SCHEMA_ID", "UNSIGNED"], reasons
    assert "speaks only for its own kind" in reasons["NOT_AUTHORIZED"]
    assert setup.guard.handlers.authorized == 1 and not setup.guard.handlers.denied
    await client.stop()
