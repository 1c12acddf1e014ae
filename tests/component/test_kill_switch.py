"""The kill switch on the embedded mesh: one workflow, one tenant, then everything, killed mid-run; every service
confirms; killed workflows end halted KILLED; no tool runs after the confirmations; new tasks in scope are refused
until `baton resume`, then accepted; the audit trace shows the kill."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from baton import topics
from baton.audit.chain import Record
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.trace import render_timeline, trace_workflow
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import ControlAction, ControlCommand, ControlScope, DeadLettered, WorkflowHalted
from baton.control import KILLED, IssueReport, command_envelope, expected_confirmers, issue
from baton.workflows import agent_kinds, load_workflows
from baton_demo.demo import _inputs
from baton_demo.mesh import Mesh, drain_auditor, start_mesh
from baton_demo.world import World, seeded_tenant
from services.supervisor import app as supervisor_app
from services.supervisor.config import Settings as SupervisorSettings

EXPECTED = expected_confirmers(agent_kinds(load_workflows()))


@dataclass
class Run:
    mesh: Mesh
    bus: EmbeddedBus
    world: World
    client: BatonClient
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    submitted: int = 0

    async def submit(self, wf: str, i: int) -> None:
        specs = load_workflows()
        spec = specs[sorted(specs)[i % 2]]
        await self.client.submit(spec.name, _inputs(spec, self.world, i), tenant_id=seeded_tenant(i), workflow_id=wf)

    async def control(
        self, action: ControlAction, scope: ControlScope, target: str | None = None, *, timeout_s: float = 5.0
    ) -> IssueReport:
        return await issue(
            self.mesh.events("operator"),
            action=action,
            scope=scope,
            target=target,
            reason="test",
            issued_by="pytest",
            expected=EXPECTED,
            timeout_s=timeout_s,
        )

    async def wait_for(self, ids: set[str], timeout_s: float = 30.0) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: ids <= set(self.outcomes)), timeout_s)

    def outcome(self, wf: str) -> Outcome:
        return self.outcomes[wf][0]


@contextlib.asynccontextmanager
async def running_mesh(tmp_path: Path) -> AsyncIterator[Run]:
    world = World(tmp_path / "world.db")
    world.seed(customers=100, seed=5)
    bus = EmbeddedBus(partitions=4)
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db", audit_db=tmp_path / "audit.db")
    run = Run(mesh=mesh, bus=bus, world=world, client=BatonClient(mesh.events("test-client")))

    async def collect() -> None:
        async for outcome in run.client.outcomes():
            run.outcomes.setdefault(outcome.envelope.workflow_id, []).append(outcome)
            async with run.arrived:
                run.arrived.notify_all()

    collector = asyncio.create_task(collect())
    try:
        yield run
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        await mesh.stop()
        world.close()


def is_killed(outcome: Outcome) -> bool:
    return isinstance(outcome, WorkflowHalted) and outcome.reason_code == KILLED


def assert_confirmed_by_everyone(report: IssueReport) -> None:
    assert report.ok, report.lines()
    assert {c.role for c in report.confirmations} == EXPECTED
    assert len(report.confirmations) == len(EXPECTED)  # one process per role here, each confirms once
    assert report.refused == []


async def test_kill_a_workflow_a_tenant_then_everything_mid_run(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as run:
        ids = [f"k-{i:02d}" for i in range(36)]
        for i, wf in enumerate(ids):
            await run.submit(wf, i)

        one = await run.control(ControlAction.HALT, ControlScope.WORKFLOW, "k-00")
        assert_confirmed_by_everyone(one)
        tenant = await run.control(ControlAction.HALT, ControlScope.TENANT, seeded_tenant(1))
        assert_confirmed_by_everyone(tenant)
        everything = await run.control(ControlAction.HALT, ControlScope.ALL)
        assert_confirmed_by_everyone(everything)
        last_tool_before = run.world.last_execution()
        halted_by_supervisor = sum(c.halted for r in (one, tenant, everything) for c in r.confirmations)

        await run.wait_for(set(ids))
        assert {wf: len(o) for wf, o in run.outcomes.items()} == dict.fromkeys(ids, 1)  # exactly one outcome each
        assert is_killed(run.outcome("k-00"))
        killed = [wf for wf in ids if is_killed(run.outcome(wf))]
        # Mid-run: the kill reached workflows that were running (the supervisor halted them itself) ...
        assert halted_by_supervisor > 0
        assert len(killed) >= halted_by_supervisor
        # ... and nothing that did not end before it ran a tool after every service confirmed.
        assert run.world.executions_after(last_tool_before) == []

        # New work is refused while the kill is in force: one halted outcome, no step, no tool.
        await run.submit("late-0", 2)
        await run.wait_for({"late-0"})
        assert is_killed(run.outcome("late-0")) and "task rejected" in run.outcome("late-0").reason  # type: ignore[union-attr]
        assert run.world.executions_after(last_tool_before) == []

        # RESUME lifts exactly its scope: everything again, but tenant-1 stays halted until it is resumed too.
        assert_confirmed_by_everyone(await run.control(ControlAction.RESUME, ControlScope.ALL))
        await run.submit("after-resume-t2", 2)
        await run.submit("after-resume-t1", 1)
        await run.wait_for({"after-resume-t2", "after-resume-t1"})
        assert not is_killed(run.outcome("after-resume-t2"))
        assert is_killed(run.outcome("after-resume-t1"))
        assert_confirmed_by_everyone(await run.control(ControlAction.RESUME, ControlScope.TENANT, seeded_tenant(1)))
        await run.submit("after-tenant-resume", 4)
        await run.wait_for({"after-tenant-resume"})
        assert not is_killed(run.outcome("after-tenant-resume"))

        # The audit records every command and confirmation; the trace of a workflow shows the kill of everything.
        auditor = run.mesh.apps["auditor"].handlers
        await drain_auditor(run.mesh, run.bus, tmp_path, deadline=asyncio.get_running_loop().time() + 10)
        assert auditor.appended >= run.bus.size([topics.CONTROL, topics.CONTROL_CONFIRMATIONS])
        store = SqliteAuditStore(tmp_path / "audit.db")
        try:
            victim = next(wf for i, wf in enumerate(ids) if wf in killed and seeded_tenant(i) == seeded_tenant(2))
            timeline = render_timeline(victim, await trace_workflow(store, victim))
            assert "KILL SWITCH HALT ALL by pytest" in timeline, timeline
            own = render_timeline("k-00", await trace_workflow(store, "k-00"))
            assert "KILL SWITCH HALT WORKFLOW k-00" in own and "kill switch confirmed by supervisor" in own, own
        finally:
            await store.close()


async def test_a_command_from_anyone_but_the_operator_is_dead_lettered_and_not_obeyed(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as run:
        agent = next(iter(agent_kinds(load_workflows())))
        forged_by = run.mesh.events(f"agent-{agent}")  # a compromised agent: a key, but not the operator's
        forged = ControlCommand(
            envelope=command_envelope(ControlScope.ALL, None, producer=forged_by.producer),
            command=ControlAction.HALT,
            scope=ControlScope.ALL,
            reason="forged",
            issued_by="mallory",
        )
        await forged_by.publish(topics.CONTROL, forged)
        await run.submit("after-forgery", 0)
        await run.wait_for({"after-forgery"})
        assert not is_killed(run.outcome("after-forgery"))
        parked: list[DeadLettered] = []

        async def keep(record: object) -> None:
            event = await run.mesh.serde.decode(record.value)  # type: ignore[attr-defined]
            if isinstance(event, DeadLettered) and event.source_topic == topics.CONTROL:
                parked.append(event)

        await run.bus.replay([topics.DEAD_LETTER], keep)
        assert parked and {d.reason_code for d in parked} == {"NOT_AUTHORIZED"}


async def test_a_service_that_does_not_confirm_is_named(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as run:
        validator = run.mesh.apps["handoff-validator"]
        await validator.subscriptions[-1].stop()  # its control listener: it no longer hears commands
        report = await run.control(ControlAction.HALT, ControlScope.WORKFLOW, "nobody", timeout_s=1.0)
        assert report.missing == ["handoff-validator"]
        assert "  MISSING    handoff-validator: no process confirmed" in report.lines()


@pytest.mark.parametrize("scope", [ControlScope.WORKFLOW, ControlScope.TENANT])
def test_a_scope_needs_its_target(scope: ControlScope) -> None:
    with pytest.raises(ValueError, match="needs a target"):
        command_envelope(scope, None, producer="p")


async def test_the_trace_shows_commands_in_force_whatever_the_chain_order() -> None:
    class Store:
        def __init__(self, by_workflow: dict[str, list[Record]]) -> None:
            self.by_workflow = by_workflow

        async def stream_by_workflow(self, workflow_id: str | None = None) -> AsyncIterator[Record]:
            for doc in self.by_workflow.get(workflow_id or "", []):
                yield doc

    def rec(at: str, kind: str, **payload: object) -> Record:
        return {"occurred_at": f"2026-01-01T00:00:{at}", "event_type": kind, "tenant_id": "t", "payload": payload}

    chain = [rec("01", "TaskRequested"), rec("09", "WorkflowHalted"), rec("05", "StepCompleted")]  # not in time order
    commands = {
        "control:all": [
            rec("00", "ControlCommand", command="RESUME"),  # before it began, and not a halt: not shown
            rec("08", "ControlCommand", command="HALT"),  # while it ran
            rec("10", "ControlCommand", command="RESUME"),  # after it ended: not shown
        ],
        "control:tenant:t": [rec("00", "ControlCommand", command="HALT")],  # in force when it began
    }
    store = Store({"wf": chain, **commands})
    got = await trace_workflow(store, "wf")  # type: ignore[arg-type]
    assert [(d["event_type"], d["occurred_at"][-2:]) for d in got] == [
        ("ControlCommand", "00"),
        ("TaskRequested", "01"),
        ("ControlCommand", "08"),
        ("WorkflowHalted", "09"),
        ("StepCompleted", "05"),
    ]


async def test_a_replica_started_after_the_kill_knows_it_before_it_reads_any_work(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as run:
        assert_confirmed_by_everyone(await run.control(ControlAction.HALT, ControlScope.TENANT, "tenant-0"))
        late = await supervisor_app.start(run.mesh.events("supervisor-2"), SupervisorSettings(backoff_base_s=0.01))
        try:
            control = late.handlers.control
            assert control is not None and control.blocked("any", "tenant-0") is not None
            assert control.blocked("any", "tenant-1") is None
            # It confirmed the recent command too (someone may still be waiting for it): one more supervisor.
            confirmations: list[str] = []

            async def keep(record: object) -> None:
                event = await run.mesh.serde.decode(record.value)  # type: ignore[attr-defined]
                confirmations.append(event.envelope.producer)

            await run.bus.replay([topics.CONTROL_CONFIRMATIONS], keep)
            assert sum(p.startswith("supervisor") for p in confirmations) == 2
        finally:
            await late.stop()
