"""Bound tool arguments and tenant-owned records, through every service on the embedded bus."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient, Outcome
from baton.context import make_snapshot
from baton.contracts.models import Envelope, Event, StepCompleted, StepRequested, WorkflowEscalated, WorkflowHalted
from baton.messaging import EventConsumer
from baton_demo.faults import Fault, FaultPlan
from baton_demo.mesh import start_mesh
from baton_demo.world import World, seeded_tenant
from tests.harness.collect import Collector
from tests.harness.expected import outcome_key


def _ticket(world: World, *, big: bool) -> str:
    amounts = {t: world.preview_refund(t)["amount"] for t in world.ticket_ids()}
    return next(t for t, a in amounts.items() if (a > 500 if big else 0 < a <= 500))


def _rows_of(world: World, customer_id: str) -> list[tuple[Any, ...]]:
    """Every row belonging to one customer, to prove a refused workflow touched none."""
    with world._lock:
        db = world._db
        rows = [tuple(r) for r in db.execute("SELECT * FROM customers WHERE id = ?", (customer_id,))]
        for table in ("documents", "orders", "filings"):
            rows += [tuple(r) for r in db.execute(f"SELECT * FROM {table} WHERE customer_id = ?", (customer_id,))]
        for table in ("tickets", "refunds"):
            rows += [
                tuple(r)
                for r in db.execute(
                    f"SELECT x.* FROM {table} x JOIN orders o ON o.id = x.order_id WHERE o.customer_id = ?",
                    (customer_id,),
                )
            ]
    return rows


def _agents_run(world: World, workflow_id: str) -> set[str]:
    """The agents the ledger (beside the world, as the mesh keeps it) saw a step of this workflow for."""
    with sqlite3.connect(world.path.with_name("ledger.db")) as db:
        return {r[0] for r in db.execute("SELECT agent FROM step_ledger WHERE workflow_id = ?", (workflow_id,))}


async def test_argument_attacks_and_cross_tenant_tasks_end_the_workflow_and_write_nothing(tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=60, seed=5)
    small, big = _ticket(world, big=False), _ticket(world, big=True)
    victim = "cust-00010"  # tenant-1's
    victim_rows = _rows_of(world, victim)
    plan = FaultPlan(
        {
            "other-ticket": ("refund_issuer", Fault.OTHER_RECORD),
            "understated": ("refund_issuer", Fault.UNDERSTATE),
            "understated-big": ("refund_issuer", Fault.UNDERSTATE),
            "other-filing": ("regulatory_filing", Fault.OTHER_RECORD),
            "rebound-read": ("identity_verification", Fault.OTHER_RECORD),
        }
    )
    bus = EmbeddedBus(partitions=2)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db", audit_db=tmp_path / "audit.db", faults=plan)
    client = BatonClient(mesh.events("test-client"))
    onboarding_customer = next(  # low risk: its filing needs no approval, so the filing step really runs
        c for c in world.customer_ids() if world.lookup_customer(c)["risk_score"] < 70 and c != victim
    )
    owner = world.tenant_of("customer_id", onboarding_customer)
    assert owner is not None
    tasks: list[tuple[str, str, dict[str, str], str]] = [
        ("other-ticket", "support_refund", {"ticket_id": small}, world.tenant_of("ticket_id", small) or ""),
        ("understated", "support_refund", {"ticket_id": small}, world.tenant_of("ticket_id", small) or ""),
        ("understated-big", "support_refund", {"ticket_id": big}, world.tenant_of("ticket_id", big) or ""),
        ("other-filing", "customer_onboarding", {"customer_id": onboarding_customer}, owner),
        ("rebound-read", "customer_onboarding", {"customer_id": onboarding_customer}, owner),
        ("cross-tenant", "customer_onboarding", {"customer_id": victim}, seeded_tenant(11)),
        ("cross-tenant-refund", "support_refund", {"ticket_id": "tkt-00010"}, seeded_tenant(12)),
    ]
    for wf, kind, inputs, tenant in tasks:
        await client.submit(kind, inputs, tenant_id=tenant, workflow_id=wf)
    outcomes: dict[str, Outcome] = {}

    async def collect() -> None:
        async for outcome in client.outcomes():
            outcomes.setdefault(outcome.envelope.workflow_id, outcome)
            if len(outcomes) == len(tasks):
                return

    await asyncio.wait_for(collect(), timeout=60)

    # Each refusal is in the audit with its code: the step's result and the workflow's outcome.
    refused = {"other-ticket", "understated", "other-filing", "cross-tenant", "cross-tenant-refund"}

    async def audited() -> dict[str, set[str]]:
        while True:
            codes: dict[str, set[str]] = {}
            async for doc in mesh.apps["auditor"].store.stream():
                payload = doc.get("payload") or {}
                code = payload.get("error_code") or payload.get("reason_code")
                if doc.get("event_type") in ("StepCompleted", "WorkflowEscalated", "WorkflowHalted") and code:
                    codes.setdefault(doc["workflow_id"], set()).add(code)
            if set(codes) >= refused and all(len(codes[wf]) >= 1 for wf in refused):
                return codes
            await asyncio.sleep(0.05)

    in_audit = await asyncio.wait_for(audited(), 30)
    for wf in ("other-ticket", "understated", "other-filing"):
        assert "ARGUMENT_NOT_BOUND" in in_audit[wf], in_audit[wf]
    for wf in ("cross-tenant", "cross-tenant-refund"):
        # Task admission refuses it before any agent sees it (the guard would deny the call, the tool's own
        # tenant check is a third line).
        assert in_audit[wf] == {"ADMISSION_CROSS_TENANT"}, in_audit[wf]
    await mesh.stop()
    await bus.stop()
    got = {wf: outcome_key(o) for wf, o in outcomes.items()}
    assert got == {
        "other-ticket": ("escalated", "ARGUMENT_NOT_BOUND"),
        "understated": ("escalated", "ARGUMENT_NOT_BOUND"),
        # Approval was asked on the bound amount (over 500, not the model's understated one), a reviewer approved
        # it, and the resumed step refunded exactly that amount.
        "understated-big": ("completed", "COMPLETED"),
        "other-filing": ("escalated", "ARGUMENT_NOT_BOUND"),
        "rebound-read": ("completed", "COMPLETED"),  # the read ran on the bound id; the filing went through
        "cross-tenant": ("halted", "ADMISSION_CROSS_TENANT"),
        "cross-tenant-refund": ("halted", "ADMISSION_CROSS_TENANT"),
    }
    reasons = {wf: o.reason for wf, o in outcomes.items() if isinstance(o, WorkflowEscalated)}
    assert "the model chose" in reasons["other-ticket"]
    halted = {wf: o.reason for wf, o in outcomes.items() if isinstance(o, WorkflowHalted)}
    assert "not of" in halted["cross-tenant"], halted
    report = world.verify()
    assert report.ok, report.problems
    # Nothing was written but the one legitimate filing and the one approved refund (of the bound amount); the
    # refused steps' next agents never acted.
    assert report.counts["refunds"] == 1 and report.counts["filings"] == 1
    assert world.preview_refund(big)["amount"] == 0  # the whole bound amount was refunded, nothing more
    assert _rows_of(world, victim) == victim_rows
    assert _agents_run(world, "cross-tenant") == set()  # never reached an agent, never cost a model call
    assert _agents_run(world, "cross-tenant-refund") == set()
    world.close()


async def test_an_agent_refuses_a_step_of_a_workflow_under_another_tenant(tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=30, seed=5)
    world.close()
    bus = EmbeddedBus(partitions=1)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db")
    client = BatonClient(mesh.events("test-client"))
    await client.submit("support_refund", {"ticket_id": "tkt-00004"}, tenant_id=seeded_tenant(4), workflow_id="wf-t")
    async for _ in client.outcomes():
        break
    results: Collector[StepCompleted] = Collector()

    async def keep(event: Event, record: BusRecord) -> None:
        if isinstance(event, StepCompleted) and event.envelope.tenant_id == "tenant-intruder":
            await results.add(event)

    watch = mesh.events("test-watch", role=identity.CLIENT)
    await bus.subscribe(
        [topics.STEP_RESULTS], group_id="test.watch", handler=EventConsumer(watch, group_id="test.watch", handler=keep)
    )
    # A step of that workflow under another tenant, as a supervisor with a bug would ask for it (signed: a
    # forger without the supervisor's key is refused before this check, see test_forged_events).
    forged = StepRequested(
        envelope=Envelope(workflow_id="wf-t", tenant_id="tenant-intruder", producer="forger"),
        agent="ticket_lookup",
        attempt=7,
        snapshot=make_snapshot({"ticket_id": "tkt-00004"}, version=1),
    )
    await mesh.events("supervisor-buggy").publish(topics.agent_steps("ticket_lookup"), forged)
    [refused] = await results.wait_for_count(1)
    await mesh.stop()
    await bus.stop()
    assert not refused.succeeded and refused.error_code == "TENANT_MISMATCH" and refused.tool_calls == 0
    assert refused.error is not None and "'tenant-intruder'" in refused.error
