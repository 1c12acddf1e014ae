"""A compromised agent that recomputes the hash, on the embedded mesh: each attack is rejected before the
next agent acts, the next agent never sees the attacked context, and nothing of it reaches the world."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from baton import topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.contracts.models import (
    Event,
    HandoffProposed,
    HandoffRejected,
    HandoffRejectionCode,
    StepRequested,
    WorkflowCompleted,
    WorkflowEscalated,
    WorkflowHalted,
)
from baton.workflows import agent_kinds, load_workflows
from baton_demo.faults import Fault, FaultPlan
from baton_demo.mesh import start_mesh
from baton_demo.world import World
from tests.harness.collect import Collector

Code = HandoffRejectionCode
# workflow id -> (input, attacking agent, attack, the verdict expected, the key it must name)
ATTACKS = {
    "a-rewrite": ("c", "compliance_check", Fault.REWRITE_UPSTREAM, Code.NOT_OWNER, "'customer'"),
    "a-swap": ("c", "identity_verification", Fault.SWAP_RECORD, Code.TOOL_PROVENANCE, "'customer'"),
    "a-hollow": ("c", "compliance_check", Fault.HOLLOW, Code.HOLLOW_CONTEXT, "hollow-context"),
    "a-refund-rewrite": ("t", "refund_preview", Fault.REWRITE_UPSTREAM, Code.NOT_OWNER, "'order'"),
    "a-refund-swap": ("t", "refund_preview", Fault.SWAP_RECORD, Code.TOOL_PROVENANCE, "'refund_preview'"),
}


async def test_attacks_by_an_agent_that_rehashes_are_rejected_before_the_next_agent_acts(tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=40, seed=3)
    # Low-risk customers and small refunds, so the agent after the attacker acts without a human.
    with sqlite3.connect(tmp_path / "world.db") as db:
        low_risk = [r[0] for r in db.execute("SELECT id FROM customers WHERE risk_score < 70 ORDER BY id")]
        small = [
            r[0] for r in db.execute("SELECT id FROM tickets WHERE requested_amount BETWEEN 1 AND 500 ORDER BY id")
        ]
    plan = FaultPlan({wf: (agent, fault) for wf, (_k, agent, fault, _c, _w) in ATTACKS.items()})
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db", audit_db=tmp_path / "audit.db", faults=plan)
    serde = mesh.serde
    seen: Collector[Event] = Collector()

    async def observe(record: BusRecord) -> None:
        await seen.add(await serde.decode(record.value))

    watched = [topics.HANDOFF_PROPOSALS, topics.HANDOFF_VERDICTS, topics.OUTCOMES]
    watched += [topics.agent_steps(k) for k in agent_kinds(load_workflows())]
    await bus.subscribe(watched, group_id="test.attacks", handler=observe)
    client = BatonClient(mesh.events("test-client"))
    for i, (wf, (kind, *_rest)) in enumerate(ATTACKS.items()):
        if kind == "c":
            tenant = world.tenant_of("customer_id", low_risk[i]) or ""
            await client.submit("customer_onboarding", {"customer_id": low_risk[i]}, tenant_id=tenant, workflow_id=wf)
        else:
            tenant = world.tenant_of("ticket_id", small[i]) or ""
            await client.submit("support_refund", {"ticket_id": small[i]}, tenant_id=tenant, workflow_id=wf)

    def finished(items: list[Event]) -> bool:
        ended = {e.envelope.workflow_id for e in items if isinstance(e, WorkflowCompleted | WorkflowHalted)}
        ended |= {e.envelope.workflow_id for e in items if isinstance(e, WorkflowEscalated)}
        return ended >= set(ATTACKS)

    items = await seen.wait_until(finished, within=60)

    # The audit holds each rejection with its reason: what an investigator reads, not only the bus.
    async def audited_rejections() -> dict[str, str]:
        while True:
            found = {
                doc["workflow_id"]: doc["payload"]["reason_code"]
                async for doc in mesh.apps["auditor"].store.stream()
                if doc.get("event_type") == "HandoffRejected"
            }
            if set(found) >= set(ATTACKS):
                return found
            await asyncio.sleep(0.05)

    in_audit = await asyncio.wait_for(audited_rejections(), 30)
    assert {wf: in_audit[wf] for wf in ATTACKS} == {wf: code.value for wf, (*_r, code, _n) in ATTACKS.items()}
    await mesh.stop()
    await bus.stop()

    for wf, (_kind, agent, _fault, code, named) in ATTACKS.items():
        mine = [e for e in items if e.envelope.workflow_id == wf]
        [rejected] = [e for e in mine if isinstance(e, HandoffRejected)]
        assert rejected.from_agent == agent and rejected.reason_code == code, rejected.reason
        assert named in rejected.reason
        [attacked] = [
            e for e in mine if isinstance(e, HandoffProposed) and e.snapshot.sha256 == rejected.proposed_sha256
        ]
        # The next agent was never asked to act on the attacked context; the attacker's step was re-run instead.
        requested = [e for e in mine if isinstance(e, StepRequested)]
        assert all(e.snapshot.sha256 != attacked.snapshot.sha256 for e in requested)
        assert any(e.agent == agent and e.attempt == 2 for e in requested)
        assert any(isinstance(e, WorkflowCompleted) for e in mine)  # the honest re-run finished the workflow

    # What reached the world came from honest contexts: filed risk scores and refunds are the true ones.
    assert world.verify().ok
    with sqlite3.connect(tmp_path / "world.db") as db:
        filed = db.execute(
            "SELECT f.risk_score, c.risk_score FROM filings f JOIN customers c ON c.id = f.customer_id"
        ).fetchall()
        refunds = db.execute(
            "SELECT r.amount, t.requested_amount FROM refunds r JOIN tickets t ON t.order_id = r.order_id"
        ).fetchall()
    assert len(filed) == 3 and all(mine == true for mine, true in filed)
    assert len(refunds) == 2 and all(amount == requested for amount, requested in refunds)
    world.close()
