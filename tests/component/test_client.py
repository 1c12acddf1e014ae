"""The upstream client on the embedded mesh: idempotent submits, one outcome per task, commit after taken."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from baton import topics
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient, Outcome, workflow_id_for
from baton.context import make_snapshot
from baton.contracts.models import Envelope, WorkflowCompleted, WorkflowHalted
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.ledger import Ledger
from baton.messaging import EventBus
from baton.workflows import load_workflows
from baton_demo.demo import _inputs
from baton_demo.mesh import start_mesh
from baton_demo.world import World
from tests.harness.identities import events_as, trust


async def _take(client: BatonClient, n: int, *, group_id: str | None = None) -> list[Outcome]:
    got: list[Outcome] = []
    async with contextlib.aclosing(client.outcomes(group_id=group_id)) as stream:
        async for outcome in stream:
            got.append(outcome)
            if len(got) == n:
                break
    return got


async def test_a_retried_submit_with_the_same_key_runs_the_workflow_once(tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=20, seed=3)
    bus = EmbeddedBus(partitions=4)
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db")
    client = BatonClient(mesh.events("test-client"))
    spec = load_workflows()["support_refund"]
    context = _inputs(spec, world, 0)
    # Customer 0's record belongs to tenant-0; the same task under tenant-1 is another workflow (and refused
    # at admission: it names another tenant's record).
    first = await client.submit(spec.name, context, tenant_id="tenant-0", idempotency_key="order-77-refund")
    again = await client.submit(spec.name, context, tenant_id="tenant-0", idempotency_key="order-77-refund")
    other_tenant = await client.submit(spec.name, context, tenant_id="tenant-1", idempotency_key="order-77-refund")
    assert first == again == workflow_id_for("tenant-0", "order-77-refund") != other_tenant
    rejected = await client.submit("no_such_workflow", {}, tenant_id="tenant-0", idempotency_key="x")
    outcomes = await asyncio.wait_for(_take(client, 3), 60)
    by_wf = {o.envelope.workflow_id: o for o in outcomes}
    assert set(by_wf) == {first, other_tenant, rejected}
    halted = by_wf[rejected]
    assert isinstance(halted, WorkflowHalted) and halted.reason_code == "UNKNOWN_WORKFLOW_TYPE"
    foreign = by_wf[other_tenant]
    assert isinstance(foreign, WorkflowHalted) and foreign.reason_code == "ADMISSION_CROSS_TENANT"
    await mesh.stop()
    assert world.verify().counts["tool_calls_repeated"] == 0
    world.close()
    ledger = Ledger(tmp_path / "ledger.db")
    assert ledger.verify().counts["steps_started_twice"] == 0
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        ran = {row[0] for row in db.execute("SELECT DISTINCT workflow_id FROM step_ledger")}
    assert ran == {first}  # the same key twice ran one workflow; the rejected ones ran none


async def test_an_outcome_is_committed_only_once_the_caller_took_it() -> None:
    bus = EmbeddedBus(partitions=1)
    events = EventBus(bus=bus, serde=AvroSerde(LocalSchemaRegistry()), producer="test", trust=trust("client"))
    client = BatonClient(events)
    await bus.create_topics([topics.OUTCOMES])
    supervisor = events_as("supervisor", bus)
    for i in range(3):
        await supervisor.publish(
            topics.OUTCOMES,
            WorkflowCompleted(
                envelope=Envelope(workflow_id=f"wf-{i}", tenant_id="t", producer="test"),
                workflow_type="support_refund",
                snapshot=make_snapshot({}, version=1),
                steps=1,
            ),
        )
    group = "upstream.outcomes"
    # Took the first and asked for the next, then stopped while holding the second.
    first = await asyncio.wait_for(_take(client, 2, group_id=group), 10)
    assert [o.envelope.workflow_id for o in first] == ["wf-0", "wf-1"]
    # The second was delivered but never finished with: the group gets it again, then the third.
    rest = await asyncio.wait_for(_take(client, 2, group_id=group), 10)
    assert [o.envelope.workflow_id for o in rest] == ["wf-1", "wf-2"]
