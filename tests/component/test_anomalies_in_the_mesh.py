"""Behaviour anomalies through every service on the embedded bus: after a warm-up of normal refunds, an agent
whose step suddenly burns 5 times its usual tokens, still within the budget (a compromised agent), is flagged and,
by policy, its workflow halted before the refund is paid; the same agent slowly becoming 40 % more verbose is
flagged once, as drift, and its workflows go on; normal traffic raises nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.contracts.models import AgentAnomaly, Event, WorkflowCompleted, WorkflowEscalated, WorkflowHalted
from baton.messaging import EventConsumer
from baton.model import ModelClient, ModelReply, ModelRequest
from baton_demo.mesh import start_mesh
from baton_demo.world import World

WARMUP = 30
RAMP = 50
AFTER = 60


@dataclass
class Verbosity:
    """A model whose token counts are multiplied, per workflow, by what the test says."""

    inner: ModelClient
    factor_of: Callable[[str], float]

    async def decide(self, request: ModelRequest) -> ModelReply:
        reply = await self.inner.decide(request)
        factor = self.factor_of(request.workflow_id)
        return ModelReply(
            reply.tool,
            reply.confidence,
            round(reply.prompt_tokens * factor),
            round(reply.completion_tokens * factor),
            reply.rationale,
        )


@dataclass
class Seen:
    outcomes: dict[str, Event] = field(default_factory=dict)
    anomalies: dict[str, AgentAnomaly] = field(default_factory=dict)

    async def on_event(self, event: Event, record: BusRecord) -> None:
        if isinstance(event, AgentAnomaly):
            self.anomalies.setdefault(event.envelope.event_id, event)
        elif isinstance(event, WorkflowCompleted | WorkflowHalted | WorkflowEscalated):
            self.outcomes.setdefault(event.envelope.workflow_id, event)

    async def until(self, n: int) -> None:
        for _ in range(3000):
            if len(self.outcomes) >= n:
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"{len(self.outcomes)} outcomes, expected {n}")


def _anomalies(agent: str, kind: str, action: str) -> float:
    return (
        REGISTRY.get_sample_value("baton_agent_anomalies_total", {"agent": agent, "kind": kind, "action": action}) or 0
    )


async def test_a_compromised_agent_is_halted_and_a_slow_drift_flagged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_SUPERVISOR_ANOMALY_ACTION", "halt")
    monkeypatch.setenv("BATON_SUPERVISOR_ANOMALY_WARMUP_STEPS", "20")
    world = World(tmp_path / "world.db")
    world.seed(customers=600, seed=3)
    tickets = [t for t in world.ticket_ids() if 0 < world.preview_refund(t)["amount"] <= 500]
    assert len(tickets) >= WARMUP + 1 + RAMP + AFTER
    factors: dict[str, float] = {}
    burst_before = _anomalies("refund_preview", "burst", "halted")
    drift_before = _anomalies("refund_preview", "drift", "flagged")

    def wrap(kind: str, model: ModelClient) -> ModelClient:
        return Verbosity(model, lambda wf: factors.get(wf, 1.0)) if kind == "refund_preview" else model

    bus = EmbeddedBus(partitions=4)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db", approvals=False, model_wrapper=wrap)
    seen = Seen()
    watch = mesh.events("test-observer", role=identity.CLIENT)
    await bus.subscribe(
        [topics.OUTCOMES, topics.ANOMALIES],
        group_id="test.observer",
        handler=EventConsumer(watch, group_id="test.observer", handler=seen.on_event),
    )
    client = BatonClient(mesh.events("test-client", role=identity.CLIENT), requested_by="upstream")
    queue = iter(tickets)

    async def submit(wf: str, factor: float = 1.0) -> str:
        ticket = next(queue)
        factors[wf] = factor
        tenant = world.tenant_of("ticket_id", ticket)
        assert tenant is not None
        await client.submit("support_refund", {"ticket_id": ticket}, tenant_id=tenant, workflow_id=wf)
        return ticket

    try:
        for i in range(WARMUP):
            await submit(f"wf-normal-{i}")
        await seen.until(WARMUP)
        assert seen.anomalies == {}
        burst_ticket = await submit("wf-burst", 5.0)  # within the token budget: only the baseline sees it
        await seen.until(WARMUP + 1)
        for i in range(RAMP + AFTER):  # a little more verbose with each workflow, then steady at +40 %
            await submit(f"wf-drift-{i}", 1 + 0.4 * min(i, RAMP) / RAMP)
            if i % 10 == 9:
                await seen.until(WARMUP + 2 + i)  # in order, about: the drift is a slope over time
        await seen.until(WARMUP + 1 + RAMP + AFTER)
    finally:
        await mesh.stop()
        await bus.stop()
    halted = seen.outcomes["wf-burst"]
    assert isinstance(halted, WorkflowHalted) and halted.reason_code == "ANOMALY", halted
    assert "burst" in halted.reason and "tokens" in halted.reason
    kinds = sorted(
        (a.envelope.workflow_id.rsplit("-", 1)[0], a.kind, a.feature, a.action) for a in seen.anomalies.values()
    )
    assert kinds == [("wf", "burst", "tokens", "halted"), ("wf-drift", "drift", "tokens", "flagged")], kinds
    everyone_else = {wf: type(o).__name__ for wf, o in seen.outcomes.items() if wf != "wf-burst"}
    assert set(everyone_else.values()) == {"WorkflowCompleted"} and len(everyone_else) == WARMUP + RAMP + AFTER
    # Halted before the refund step: nothing was paid for the compromised workflow's ticket.
    db = sqlite3.connect(tmp_path / "world.db")
    paid = db.execute(
        "SELECT COUNT(*) FROM refunds r JOIN tickets t ON t.order_id = r.order_id WHERE t.id = ?", (burst_ticket,)
    ).fetchone()[0]
    db.close()
    world.close()
    assert paid == 0
    assert _anomalies("refund_preview", "burst", "halted") - burst_before == 1
    assert _anomalies("refund_preview", "drift", "flagged") - drift_before == 1
