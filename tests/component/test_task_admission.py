"""Task admission on the embedded mesh: every rejected task gets exactly one outcome and no step is ever
requested for it (it never costs a model call), while the admitted tasks run to their outcomes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from baton import topics
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import Event, StepRequested, WorkflowHalted
from baton.policy.spend import SpendAccounts, utc_day
from baton.policy.spend_sqlite import SqliteSpendStore
from baton.workflows import agent_kinds, load_workflows
from baton_demo.mesh import Mesh, start_mesh
from baton_demo.world import World, seeded_tenant

TENANTS = """
tenants:
  tenant-0: {active: true, daily_spend_limit_usd: 50, tasks_per_minute: 100}
  tenant-1: {active: true, daily_spend_limit_usd: 50, tasks_per_minute: 100}
  tenant-2: {active: true, daily_spend_limit_usd: 50, tasks_per_minute: 2}
  tenant-retired: {active: false, daily_spend_limit_usd: 50, tasks_per_minute: 100}
  tenant-broke: {active: true, daily_spend_limit_usd: 1, tasks_per_minute: 100}
ownership_hook: baton_demo.ownership:world_owner
"""


def customer(i: int) -> dict[str, str]:
    return {"customer_id": f"cust-{i:05d}"}  # seeded for tenant seeded_tenant(i)


async def _published(mesh: Mesh, bus: EmbeddedBus, topic: str) -> list[tuple[str, Event]]:
    out = []
    for partition in range(4):
        for record in bus.log_of((topic, partition)):
            event = await mesh.serde.decode(record.value)
            out.append((event.envelope.workflow_id, event))
    return out


async def test_rejected_tasks_get_one_outcome_and_no_step_while_admitted_ones_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=30, seed=3)
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    # tenant-broke spent its whole day already (the guard's accounts, which the supervisor reads).
    spend = SpendAccounts(SqliteSpendStore(tmp_path / "spend.db"), {"tenant-broke": 1.0})
    await spend.reserve("call-1", "tenant-broke", utc_day(time.time()), 1.0)
    await spend.settle("call-1", "tenant-broke", utc_day(time.time()), 1.0)
    await spend.store.close()
    for name, value in {
        "BATON_SUPERVISOR_ADMISSION": "true",
        "BATON_SUPERVISOR_TENANTS_FILE": str(tmp_path / "tenants.yaml"),
        "BATON_SUPERVISOR_SPEND_STORE": "embedded",
        "BATON_SUPERVISOR_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_WORLD_DB": str(tmp_path / "world.db"),  # where the demo's ownership hook looks
    }.items():
        monkeypatch.setenv(name, value)
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db")
    client = BatonClient(mesh.events("test-client"))
    flow = "customer_onboarding"
    rejected = {
        "unknown-tenant": ("tenant-9", customer(0), "ADMISSION_UNKNOWN_TENANT"),
        "inactive": ("tenant-retired", customer(0), "ADMISSION_TENANT_INACTIVE"),
        "cross-tenant": (seeded_tenant(1), customer(0), "ADMISSION_CROSS_TENANT"),
        "spend-exhausted": ("tenant-broke", {"customer_id": "cust-99999"}, "ADMISSION_SPEND_EXHAUSTED"),
    }
    admitted = {f"ok-{i}": (seeded_tenant(i), customer(i)) for i in (0, 1, 3, 4)}
    # tenant-2 may start 2 tasks a minute: of three, one is rate limited (which one depends on the order).
    burst = {f"burst-{i}": (seeded_tenant(i), customer(i)) for i in (2, 5, 8)}
    for wf, (tenant, task_input, _code) in rejected.items():
        await client.submit(flow, task_input, tenant_id=tenant, workflow_id=wf)
    await client.submit("payroll", customer(0), tenant_id=seeded_tenant(0), workflow_id="unknown-workflow")
    for wf, (tenant, task_input) in (admitted | burst).items():
        await client.submit(flow, task_input, tenant_id=tenant, workflow_id=wf)
    wanted = len(rejected) + 1 + len(admitted) + len(burst)
    outcomes: dict[str, Outcome] = {}

    async def collect() -> None:
        async for outcome in client.outcomes():
            outcomes.setdefault(outcome.envelope.workflow_id, outcome)
            if len(outcomes) == wanted:
                return

    await asyncio.wait_for(collect(), timeout=60)
    await mesh.stop()
    await bus.stop()
    world.close()

    def code(wf: str) -> str:
        outcome = outcomes[wf]
        return outcome.reason_code if isinstance(outcome, WorkflowHalted) else type(outcome).__name__

    for wf, (_tenant, _input, expected) in rejected.items():
        assert code(wf) == expected, outcomes[wf]
    assert code("unknown-workflow") == "UNKNOWN_WORKFLOW_TYPE"  # the supervisor's own check, before admission
    cross = outcomes["cross-tenant"]
    assert isinstance(cross, WorkflowHalted)
    assert "'cust-00000' is a record of tenant 'tenant-0', not of 'tenant-1'" in cross.reason
    assert [code(wf) for wf in burst].count("ADMISSION_RATE_LIMITED") == 1
    assert not any(code(wf).startswith("ADMISSION_") for wf in admitted)
    limited = {wf for wf in burst if code(wf) == "ADMISSION_RATE_LIMITED"}
    refused = set(rejected) | {"unknown-workflow"} | limited
    started = set(admitted) | set(burst) - limited

    published = await _published(mesh, bus, topics.OUTCOMES)
    per_workflow = Counter(wf for wf, _event in published)
    assert all(per_workflow[wf] == 1 for wf in refused), per_workflow
    steps: set[str] = set()
    for kind in agent_kinds(load_workflows()):
        steps |= {
            wf
            for wf, event in await _published(mesh, bus, topics.agent_steps(kind))
            if isinstance(event, StepRequested)
        }
    assert not steps & refused  # never a step: never a model call
    assert started <= steps
    # Admitted tasks run as they would without admission: completed, or escalated for a human's approval.
    ran = {wf: code(wf) for wf in started}
    assert set(ran.values()) <= {"WorkflowCompleted", "WorkflowEscalated"} and "WorkflowCompleted" in ran.values(), ran
