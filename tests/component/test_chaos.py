"""The whole mesh on the embedded bus under infrastructure faults: publishes that fail at random, poison
records on every consumed topic, an oversized context and a supervisor replaced mid-run. Every workflow
must reach exactly the outcome it reaches in a clean run, with exactly the dead letters the poison
deserves, and every service must still be processing afterwards."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from baton import topics
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.verify import verify_store
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.contracts.models import DeadLettered
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.workflows import agent_kinds, load_workflows
from baton_demo.chaos import FlakyBus, Poison, consumed_topics, poison_records
from baton_demo.demo import _eligible, _inputs
from baton_demo.faults import Fault, FaultPlan
from baton_demo.mesh import start_mesh
from baton_demo.world import World, seeded_tenant
from services.auditor.app import audited_topics
from services.supervisor import app as supervisor_app
from tests.harness.collect import Collector
from tests.harness.expected import outcome_key

WORKFLOWS = 40
LATER = 10
BIG = "big-context"
HUGE = "huge-context"


@dataclass
class Run:
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)
    outcome_ids: dict[str, set[str]] = field(default_factory=dict)
    dead_letters: list[DeadLettered] = field(default_factory=list)
    failed_publishes: int = 0


async def _run(tmp: Path, *, failure_rate: float, poison: bool) -> Run:
    os.makedirs(tmp)
    world = World(tmp / "world.db")
    world.seed(customers=120, seed=5)
    specs = load_workflows()
    kinds = sorted(specs)
    items = [(f"c-{i:03d}", specs[kinds[i % 2]]) for i in range(WORKFLOWS + LATER)]
    plan = FaultPlan.spread(
        [(wf, _eligible(s)) for wf, s in items[:WORKFLOWS]],
        (Fault.TRUNCATE, Fault.STALE, Fault.TAMPER, Fault.RATE_LIMIT),
        per_fault=2,
        seed=3,
    )
    inner = EmbeddedBus(partitions=4)
    bus = FlakyBus(inner, failure_rate=0.0, seed=11)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp / "world.db", audit_db=tmp / "audit.db", faults=plan)
    serde = AvroSerde(LocalSchemaRegistry())
    run = Run()
    seen: Collector[str] = Collector()

    async def observe(record: BusRecord) -> None:
        event = await serde.decode(record.value)
        if isinstance(event, DeadLettered):
            run.dead_letters.append(event)
            return
        outcome = outcome_key(event)
        if outcome is not None:
            wf = event.envelope.workflow_id
            run.outcome_ids.setdefault(wf, set()).add(event.envelope.event_id)
            run.outcomes.setdefault(wf, outcome)
            await seen.add(wf)

    await inner.subscribe([topics.OUTCOMES, topics.DEAD_LETTER], group_id="test.observer", handler=observe)
    client = BatonClient(mesh.events("test-client"))
    onboarding = specs["customer_onboarding"]
    big = dict(_inputs(onboarding, world, 0), notes="n" * 600_000)  # under the 1,000,000-byte limit
    huge = dict(_inputs(onboarding, world, 1), notes="n" * 1_200_000)  # over it
    for i, (wf, spec) in enumerate(items[:WORKFLOWS]):
        await client.submit(spec.name, _inputs(spec, world, i), tenant_id=seeded_tenant(i), workflow_id=wf)
    await client.submit(onboarding.name, big, tenant_id=seeded_tenant(0), workflow_id=BIG)
    await client.submit(onboarding.name, huge, tenant_id=seeded_tenant(1), workflow_id=HUGE)
    await client.submit("no_such_workflow", {}, tenant_id="tenant-0", workflow_id="c-undeclared")
    expected_poison: list[Poison] = []
    if poison:
        consumed = consumed_topics(agent_kinds(specs))
        for p in await poison_records(serde, consumed, mesh.trust):
            await inner.publish(p.topic, p.value, key=p.key, headers=p.headers)
            if p.expect is not None:
                expected_poison.append(p)
    bus.failure_rate = failure_rate
    first = {wf for wf, _ in items[:WORKFLOWS]} | {BIG, HUGE, "c-undeclared"}
    await seen.wait_until(lambda got: len(set(got) & first) >= len(first) // 3, within=120)
    # Replace the supervisor mid-run, as a crash would: the new one restores from the checkpoints,
    # including the poison one, and carries on.
    old = mesh.apps.pop("supervisor")
    for task in old.tasks:
        task.cancel()
    for sub in old.subscriptions:
        await sub.kill()
    mesh.apps["supervisor"] = await supervisor_app.start(
        mesh.events("supervisor-2"), mesh.supervisor_settings(backoff_base_s=0.01), owners=mesh.owners
    )
    await seen.wait_until(lambda got: first <= set(got), within=180)
    # Still processing: a fresh batch, with no faults, all complete their course.
    run.failed_publishes = bus.failed
    bus.failure_rate = 0.0
    for i, (wf, spec) in enumerate(items[WORKFLOWS:], start=WORKFLOWS):
        await client.submit(spec.name, _inputs(spec, world, i), tenant_id=seeded_tenant(i), workflow_id=wf)
    await seen.wait_until(lambda got: {wf for wf, _ in items} <= set(got), within=60)
    auditor = mesh.apps["auditor"].handlers
    public_key = auditor.public_key
    audited = inner.size(audited_topics())
    await asyncio.wait_for(_drained(lambda: auditor.appended + auditor.skipped >= audited), 60)
    await mesh.stop()
    await bus.stop()
    report = world.verify()
    world.close()
    assert report.ok, report.problems
    assert report.counts["tool_calls_repeated"] == 0
    store = SqliteAuditStore(tmp / "audit.db")
    audit = await verify_store(store, public_key)
    await store.close()
    assert audit.ok, audit.problems[:5]
    dead = Counter((d.source_topic, d.reason_code) for d in run.dead_letters if d.consumer_group != "chaos")
    assert dead == Counter((p.topic, p.expect) for p in expected_poison), dead
    return run


async def _drained(done: Callable[[], bool]) -> None:
    while not done():  # noqa: ASYNC110 - the auditor has no completion signal; it drains what is left
        await asyncio.sleep(0.05)


async def test_every_workflow_reaches_its_true_outcome_under_publish_failures_and_poison(tmp_path: Path) -> None:
    clean = await _run(tmp_path / "clean", failure_rate=0.0, poison=False)
    chaos = await _run(tmp_path / "chaos", failure_rate=0.08, poison=True)
    assert chaos.failed_publishes > 20  # the faults really happened
    assert chaos.outcomes == clean.outcomes  # each workflow: the same outcome, with the same reason
    # Exactly one outcome each: one re-sent after a failed publish or a crash carries the same event id.
    assert {len(ids) for ids in chaos.outcome_ids.values()} == {1}
    assert clean.outcomes[BIG][1] != "CONTEXT_TOO_LARGE"  # under the limit: admitted, carried, decided
    assert clean.outcomes[HUGE] == ("halted", "CONTEXT_TOO_LARGE")
    assert clean.outcomes["c-undeclared"] == ("halted", "UNKNOWN_WORKFLOW_TYPE")
    assert not [o for o in chaos.outcomes.values() if o[1] == "BUDGET_WALL_CLOCK"]
    assert clean.dead_letters == []
