"""100 concurrent workflows of one tenant against its daily spend limit, through every service on the embedded bus.

Tool calls are priced; each is reserved against the tenant's day before the guard authorizes it, so however the
workflows interleave the day ends at or under the limit, the 50 % and 80 % alerts are raised once each, and every
workflow still gets exactly one outcome: completed, escalated for approval, or halted by the hard stop (the
guard's SPEND_LIMIT denial, or admission refusing a task once the day is spent).
Model tokens are priced at 0 here: they are metered after each model turn (a turn cannot be un-spent), so they
are not part of what this test can hold to the limit (docs/decisions/0018-spend-and-admission.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from baton import topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import GuardFlagged, GuardFlagKind, ToolCallAuthorized, WorkflowEscalated, WorkflowHalted
from baton.policy.spend import SpendAccounts, utc_day
from baton.policy.spend_sqlite import SqliteSpendStore
from baton_demo.mesh import start_mesh
from baton_demo.world import World

LIMIT = 2.0
TENANTS = f"""
tenants:
  tenant-0: {{active: true, daily_spend_limit_usd: {LIMIT}, tasks_per_minute: 1000}}
  tenant-1: {{active: true, daily_spend_limit_usd: 50, tasks_per_minute: 1000}}
  tenant-2: {{active: true, daily_spend_limit_usd: 50, tasks_per_minute: 1000}}
prices:
  default_model_per_1k_tokens_usd: 0.0
  default_tool_call_usd: 0.01
  tools: {{issue_refund: 0.03}}
"""


async def test_100_concurrent_workflows_of_one_tenant_stay_within_its_daily_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=300, seed=11)
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    monkeypatch.setenv("BATON_POLICY_GUARD_TENANTS_FILE", str(tmp_path / "tenants.yaml"))
    monkeypatch.setenv("BATON_SUPERVISOR_TENANTS_FILE", str(tmp_path / "tenants.yaml"))
    tickets = [t for t in world.ticket_ids() if world.tenant_of("ticket_id", t) == "tenant-0"][:100]
    assert len(tickets) == 100
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db", audit_db=tmp_path / "audit.db")
    authorized: list[ToolCallAuthorized] = []
    alerts: list[GuardFlagged] = []

    async def watch(record: BusRecord) -> None:
        event = await mesh.serde.decode(record.value)
        if isinstance(event, ToolCallAuthorized):
            authorized.append(event)
        elif isinstance(event, GuardFlagged) and event.kind is GuardFlagKind.SPEND_ALERT:
            alerts.append(event)

    await bus.subscribe([topics.TOOL_VERDICTS, topics.GUARD_FLAGS], group_id=None, handler=watch)
    dead: list[BusRecord] = []

    async def keep_dead(record: BusRecord) -> None:
        dead.append(record)

    await bus.subscribe([topics.DEAD_LETTER], group_id=None, handler=keep_dead)
    client = BatonClient(mesh.events("test-client"))
    for i, ticket in enumerate(tickets):
        await client.submit("support_refund", {"ticket_id": ticket}, tenant_id="tenant-0", workflow_id=f"spend-{i}")
    outcomes: dict[str, Outcome] = {}
    seen: Counter[str] = Counter()

    async def collect() -> None:
        async for outcome in client.outcomes():
            seen[outcome.envelope.workflow_id] += 1
            outcomes.setdefault(outcome.envelope.workflow_id, outcome)
            if len(outcomes) == len(tickets):
                return

    await asyncio.wait_for(collect(), timeout=120)
    await mesh.stop()
    await bus.stop()

    def key(outcome: Outcome) -> str:
        if isinstance(outcome, WorkflowHalted | WorkflowEscalated):
            return f"{type(outcome).__name__}:{outcome.reason_code}"
        return type(outcome).__name__

    kinds = Counter(key(o) for o in outcomes.values())
    assert sum(kinds.values()) == 100 and set(seen.values()) == {1}, (kinds, seen)
    assert set(kinds) <= {
        "WorkflowCompleted",
        "WorkflowEscalated:APPROVAL_REQUIRED",
        "WorkflowHalted:DENIED_SPEND_LIMIT",
        "WorkflowHalted:ADMISSION_SPEND_EXHAUSTED",
    }, kinds
    assert kinds["WorkflowHalted:DENIED_SPEND_LIMIT"] > 0, kinds  # the limit was really reached mid-run
    store = SqliteSpendStore(tmp_path / "spend.db")
    spent = await SpendAccounts(store, {"tenant-0": LIMIT}).spent("tenant-0", utc_day(time.time()))
    await store.close()
    charged = sum(a.cost_usd for a in authorized if a.envelope.tenant_id == "tenant-0")
    assert spent <= LIMIT + 1e-9 and spent == pytest.approx(charged), (spent, charged)
    shares = sorted(a.figures["share"] for a in alerts)
    assert shares.count(0.5) == 1 and shares.count(0.8) == 1 and shares.count(1.0) <= 1, shares
    # Every refund the world holds was authorized (and paid for): nothing ran past the hard stop.
    report = world.verify()
    assert report.ok, report.problems
    assert report.counts["refunds"] == sum(1 for a in authorized if a.tool == "issue_refund")
    assert dead == []
    world.close()
