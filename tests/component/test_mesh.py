"""Every service together on the embedded bus: the demo's guarantees, and a supervisor replaced mid-run."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console

from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient, Outcome
from baton.ledger import Ledger
from baton.workflows import load_workflows
from baton_demo.demo import PLANTED, _inputs, run_demo
from baton_demo.faults import ARGUMENT_FAULTS, Fault
from baton_demo.mesh import start_mesh
from baton_demo.world import World, seeded_tenant
from services.supervisor import app as supervisor_app


async def test_every_injected_fault_is_detected_and_every_workflow_ends(tmp_path: Path) -> None:
    report = await run_demo(
        workflows=48,
        faults_per_kind=2,
        # Argument faults are refused at write tools; the demo injects at read-only agents, where they are rebound.
        faults=tuple(f for f in Fault if f not in ARGUMENT_FAULTS),
        world_dir=tmp_path,
        console=Console(file=io.StringIO()),
        timeout_s=60,
    )
    assert report.missing_outcomes == []
    assert report.undetected == []
    # Each fault twice, and the planted ticket content: PII in 4 tickets, instructions in 2.
    assert report.injected == report.detected and sum(report.injected.values()) == 2 * (
        len(Fault) - len(ARGUMENT_FAULTS)
    ) + sum(PLANTED.values())
    assert report.guard["denied UNKNOWN_TOOL"] == 2 and report.guard["flagged INJECTION_FLAGGED"] == 2
    assert set(report.redacted) == {"CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE"}
    assert sum(report.outcomes.values()) == 48
    assert report.outcomes["completed"] > 20
    assert report.verdicts["rejected TRUNCATED"] == 2 and report.verdicts["rejected STALE"] == 2
    assert report.world_problems == []


async def test_a_supervisor_replaced_mid_run_finishes_every_workflow_without_rerunning_a_step(tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=100, seed=5)
    bus = EmbeddedBus(partitions=4)
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db")
    client = BatonClient(mesh.events("test-client"))
    specs = load_workflows()
    kinds = sorted(specs)
    wanted = 40
    for i in range(wanted):
        spec = specs[kinds[i % 2]]
        await client.submit(spec.name, _inputs(spec, world, i), tenant_id=seeded_tenant(i), workflow_id=f"r-{i}")
    outcomes: dict[str, Outcome] = {}

    async def collect() -> None:
        async for outcome in client.outcomes():
            outcomes.setdefault(outcome.envelope.workflow_id, outcome)
            if len(outcomes) == 8:
                old = mesh.apps.pop("supervisor")
                for task in old.tasks:
                    task.cancel()
                for sub in old.subscriptions:
                    await sub.kill()  # no commit: what it was handling is redelivered
                mesh.apps["supervisor"] = await supervisor_app.start(
                    mesh.events("supervisor-2"), mesh.supervisor_settings(backoff_base_s=0.01), owners=mesh.owners
                )
            if len(outcomes) == wanted:
                return

    await asyncio.wait_for(collect(), timeout=60)
    await mesh.stop()
    report = world.verify()
    assert report.ok, report.problems
    assert report.counts["tool_calls_repeated"] == 0
    world.close()
    ledger = Ledger(world.path.with_name("ledger.db"))
    assert ledger.verify().counts["steps_started_twice"] == 0
    ledger.close()


async def test_a_clean_run_of_the_demo_raises_no_behaviour_anomaly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 80 workflows of each kind: every agent's baseline is warm after 20 steps, so each is judged 60 times or more.
    monkeypatch.setenv("BATON_SUPERVISOR_ANOMALY_WARMUP_STEPS", "20")
    report = await run_demo(
        workflows=160, faults_per_kind=0, world_dir=tmp_path, console=Console(file=io.StringIO()), timeout_s=120
    )
    assert report.missing_outcomes == [] and report.ok
    assert report.anomalies_clean == [] and report.anomalies_faulted == {}
