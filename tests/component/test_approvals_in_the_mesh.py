"""Approvals through every service on the embedded bus: what a reviewer reads, 2 of 3 distinct reviewers, the
requesting side refused, a rejection, an SLA that escalates once and then expires, and the effect of an approved
action happening exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.contracts.models import Event, WorkflowCompleted, WorkflowEscalated, WorkflowHalted
from baton.messaging import EventConsumer
from baton_demo.mesh import Mesh, start_mesh
from baton_demo.reviewer import DEMO_TOKENS
from baton_demo.world import World

Outcome = WorkflowCompleted | WorkflowHalted | WorkflowEscalated


@dataclass
class Running:
    mesh: Mesh
    world: World
    api: httpx.AsyncClient
    client: BatonClient
    outcomes: dict[str, Outcome]

    async def pending(self, reviewer: str = "alice") -> list[dict[str, Any]]:
        answer = await self.api.get("/api/approvals", headers=_auth(reviewer))
        answer.raise_for_status()
        listed: list[dict[str, Any]] = answer.json()
        return listed

    async def wait_pending(self, n: int, reviewer: str = "alice") -> list[dict[str, Any]]:
        for _ in range(600):
            listed = await self.pending(reviewer)
            if len(listed) == n:
                return listed
            await asyncio.sleep(0.02)
        pytest.fail(f"{len(await self.pending(reviewer))} approvals pending, expected {n}")

    async def wait_outcomes(self, *workflows: str) -> None:
        for _ in range(1000):
            if all(wf in self.outcomes for wf in workflows):
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"no outcome for {[wf for wf in workflows if wf not in self.outcomes]}")

    def tenant(self, argument: str, value: str) -> str:
        owner = self.world.tenant_of(argument, value)
        assert owner is not None
        return owner


def _auth(reviewer: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {DEMO_TOKENS[reviewer]}"}


async def _running(tmp_path: Path, **options: Any) -> AsyncIterator[Running]:
    world = World(tmp_path / "world.db")
    world.seed(customers=300, seed=5)
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db", approvals=True, reviewer=False, **options)
    outcomes: dict[str, Outcome] = {}

    async def keep(event: Event, record: BusRecord) -> None:
        if isinstance(event, WorkflowCompleted | WorkflowHalted | WorkflowEscalated):
            outcomes.setdefault(event.envelope.workflow_id, event)

    watch = mesh.events("test-observer", role=identity.CLIENT)
    await bus.subscribe(
        [topics.OUTCOMES],
        group_id="test.observer",
        handler=EventConsumer(watch, group_id="test.observer", handler=keep),
    )
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=mesh.apps["approvals"].web), base_url="http://approvals")
    # The tasks are submitted by carol, a reviewer too: she is on their requesting side.
    client = BatonClient(mesh.events("test-client", role=identity.CLIENT), requested_by="carol")
    try:
        yield Running(mesh, world, api, client, outcomes)
    finally:
        await api.aclose()
        await mesh.stop()
        await bus.stop()
        world.close()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async for r in _running(tmp_path):
        yield r


def _refund_tickets(world: World) -> list[str]:
    return [t for t in world.ticket_ids() if world.preview_refund(t)["amount"] > 500]


async def test_two_of_three_reviewers_approve_the_exact_refund_once_and_a_rejection_halts(running: Running) -> None:
    r = running
    approve_ticket, reject_ticket = _refund_tickets(r.world)[:2]
    amount = r.world.preview_refund(approve_ticket)["amount"]
    for wf, ticket in (("wf-approve", approve_ticket), ("wf-reject", reject_ticket)):
        await r.client.submit(
            "support_refund", {"ticket_id": ticket}, tenant_id=r.tenant("ticket_id", ticket), workflow_id=wf
        )
    listed = {s["decision_point"]["workflow_id"]: s for s in await r.wait_pending(2)}
    shown = listed["wf-approve"]
    # What the reviewer reads: the refund's dry run as a before/after diff, the arguments and where they came
    # from, why and how sure the agent is, where in the workflow, and the lineage so far.
    diff = {row["field"]: (row["before"], row["after"]) for row in shown["what_changes"]["diff"]}
    before_refunded, after_refunded = diff["refunded"]
    assert after_refunded == pytest.approx(before_refunded + amount)
    plan = {row["argument"]: (row["value"], row["bound_from"]) for row in shown["what_changes"]["plan"]}
    assert plan == {"ticket_id": (approve_ticket, "ticket_id"), "amount": (amount, "refund_preview.amount")}
    assert shown["lineage"] == ["ticket_lookup", "refund_preview"] and shown["why"] and 0 < shown["confidence"] <= 1
    assert shown["decision_point"]["agent"] == "refund_issuer" and shown["required"] == 2

    async def vote(reviewer: str, approval: dict[str, Any], kind: str, reason: str = "ok") -> httpx.Response:
        return await r.api.post(
            f"/api/approvals/{approval['id']}/{kind}",
            json={"digest": approval["digest"], "reason": reason},
            headers=_auth(reviewer),
        )

    assert (await vote("alice", shown, "approve")).status_code == 200
    twice = await vote("alice", shown, "approve")  # a double click counts once
    assert (twice.status_code, twice.json()["code"]) == (409, "ALREADY_VOTED")
    assert len(await r.pending()) == 2 and "wf-approve" not in r.outcomes  # 1 of 2: still waiting
    mine = await vote("carol", shown, "approve")  # she submitted the task: never a reviewer of its approvals
    assert (mine.status_code, mine.json()["code"]) == (403, "SELF_APPROVAL")
    assert (await vote("bob", shown, "approve")).json()["state"] == "APPROVED"
    refused = await vote("bob", listed["wf-reject"], "reject", reason="")
    assert refused.status_code == 422  # a rejection says why
    assert (await vote("bob", listed["wf-reject"], "reject", reason="the customer was refunded by phone")).json()[
        "state"
    ] == "REJECTED"
    await r.wait_outcomes("wf-approve", "wf-reject")
    assert isinstance(r.outcomes["wf-approve"], WorkflowCompleted)
    halted = r.outcomes["wf-reject"]
    assert isinstance(halted, WorkflowHalted) and halted.reason_code == "APPROVAL_REJECTED"
    assert "rejected by bob: the customer was refunded by phone" in halted.reason
    # Approving again, after the decision, changes nothing.
    again = await vote("alice", shown, "approve")
    assert again.status_code == 409 and again.json()["code"] == "ALREADY_DECIDED"
    db = sqlite3.connect(r.world.path)
    refunds = db.execute(
        "SELECT r.amount, c.executions FROM refunds r JOIN tool_calls c ON c.idempotency_key = r.idempotency_key "
        "JOIN orders o ON o.id = r.order_id JOIN tickets t ON t.order_id = o.id WHERE t.id IN (?, ?)",
        (approve_ticket, reject_ticket),
    ).fetchall()
    db.close()
    assert refunds == [(amount, 1)]  # the approved refund, paid once; nothing for the rejected one


async def test_an_approval_nobody_decides_escalates_once_then_expires_and_the_workflow_halts(tmp_path: Path) -> None:
    async for r in _running(tmp_path, approval_sla_s=0.5):
        customer = next(
            c
            for c in r.world.customer_ids()
            if r.world.lookup_customer(c)["risk_score"] >= 70 and r.world.check_documents(c)["all_valid"]
        )
        await r.client.submit(
            "customer_onboarding",
            {"customer_id": customer},
            tenant_id=r.tenant("customer_id", customer),
            workflow_id="wf-sla",
        )
        await r.wait_outcomes("wf-sla")
        halted = r.outcomes["wf-sla"]
        assert isinstance(halted, WorkflowHalted) and halted.reason_code == "APPROVAL_EXPIRED", halted
        approval_id = halted.reason.split()[1]
        record = await r.mesh.apps["approvals"].handlers.desk.get(approval_id)
        # Escalated to compliance-leads when its first SLA passed, then expired there.
        assert (record.escalations, record.queue, record.state.value) == (1, "compliance-leads", "EXPIRED")
        db = sqlite3.connect(r.world.path)
        assert db.execute("SELECT COUNT(*) FROM filings WHERE customer_id = ?", (customer,)).fetchone() == (0,)
        db.close()
