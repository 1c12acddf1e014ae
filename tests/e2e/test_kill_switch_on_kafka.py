"""`kill --all` during a 200-workflow run on a real Kafka broker, every service its own process (two supervisor
replicas): every role confirms; every workflow ends exactly once, as it would have without the kill or halted
KILLED; no dead letter; no tool executes after its agent confirmed; new tasks are refused until `baton resume`
(the CLI itself), then accepted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from baton import topics
from baton.audit.keys import encode_signing_key, generate_signing_key
from baton.bus.base import BusRecord
from baton.bus.kafka import KafkaBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import ControlAction, ControlScope, DeadLettered
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.control import KILLED, IssueReport, expected_confirmers, issue, latency_by_role
from baton.identity import agent_role
from baton.messaging import EventBus
from baton.tools.executor import PREVIEW_SUFFIX
from baton.workflows import agent_kinds, load_workflows
from baton_demo.demo import _inputs
from baton_demo.faults import FaultPlan
from baton_demo.world import World, seeded_tenant
from tests.harness.expected import Submission, expected_outcomes, outcome_key
from tests.harness.identities import trust, write_keys
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.processes import ServiceProcesses

pytestmark = pytest.mark.e2e

WORKFLOWS = 200
DEMO_SERVICE = ("-m", "baton_demo.service")
KILLED_KEY = ("halted", KILLED)


async def test_kill_all_during_200_workflows_on_kafka(own_broker: KafkaBroker, tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=300, seed=11)
    specs = load_workflows()
    kinds = sorted(specs)
    kinds_of_agents = agent_kinds(specs)
    expected_roles = expected_confirmers(kinds_of_agents)
    submissions = [
        Submission(f"kill-{i:04d}", specs[kinds[i % 2]].name, _inputs(specs[kinds[i % 2]], world, i), seeded_tenant(i))
        for i in range(WORKFLOWS)
    ]
    refused = Submission("kill-refused", kinds[0], _inputs(specs[kinds[0]], world, 240), seeded_tenant(240))
    resumed = Submission("kill-resumed", kinds[1], _inputs(specs[kinds[1]], world, 241), seeded_tenant(241))
    expected = await expected_outcomes(
        [*submissions, resumed], plan=FaultPlan(), world_seed=(300, 11), workdir=tmp_path / "expected"
    )
    agent_of_tool = {t.name: agent_role(a.name) for spec in specs.values() for a in spec.agents for t in a.tools}
    # A tool's dry run (shown to a reviewer) runs in the agent of the tool it previews, under the same gate.
    agent_of_tool |= {f"{tool}{PREVIEW_SUFFIX}": role for tool, role in agent_of_tool.items()}

    keys = write_keys(tmp_path / "keys")
    env = {
        "BATON_BUS": "kafka",
        # No approval service runs here: a refund that needs a human ends escalated to its queue.
        "BATON_SUPERVISOR_AWAIT_APPROVALS": "false",
        "BATON_KAFKA_BOOTSTRAP": own_broker.bootstrap,
        "BATON_KEYS_DIR": str(keys),
        "BATON_LOG_LEVEL": "WARNING",
        "BATON_WORLD_DB": str(tmp_path / "world.db"),
        "BATON_AGENT_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_HANDOFF_VALIDATOR_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_POLICY_GUARD_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_SUPERVISOR_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_SUPERVISOR_BACKOFF_BASE_S": "0.05",
        "BATON_AUDITOR_STORE": "embedded",
        "BATON_AUDITOR_SQLITE_PATH": str(tmp_path / "audit.db"),
        "BATON_AUDITOR_SIGNING_KEY": encode_signing_key(generate_signing_key()),
    }
    procs = ServiceProcesses(env=env, logdir=tmp_path)
    serde = AvroSerde(LocalSchemaRegistry())
    bus = KafkaBus(own_broker.bootstrap, client_id="kill-e2e")
    await bus.start()
    operator = EventBus(bus=bus, serde=serde, producer="kill-e2e-operator", trust=trust("operator"))
    client = BatonClient(EventBus(bus=bus, serde=serde, producer="kill-e2e-client", trust=trust("client")))
    await bus.create_topics(
        [
            topics.TASKS,
            topics.OUTCOMES,
            topics.CHECKPOINTS,
            topics.STEP_RESULTS,
            topics.HANDOFF_PROPOSALS,
            topics.HANDOFF_VERDICTS,
            topics.DECISIONS,
            topics.DEAD_LETTER,
            topics.CONTROL,
            topics.CONTROL_CONFIRMATIONS,
            *(topics.agent_steps(k) for k in kinds_of_agents),
        ]
    )

    async def control(action: ControlAction, *, timeout_s: float, settle_s: float = 0.2) -> IssueReport:
        # The code path of `baton kill` / `baton resume` (baton.cli._control), on this test's bus.
        return await issue(
            operator,
            action=action,
            scope=ControlScope.ALL,
            target=None,
            reason="e2e",
            issued_by="pytest",
            expected=expected_roles,
            timeout_s=timeout_s,
            settle_s=settle_s,
        )

    try:
        procs.spawn("supervisor-1", *DEMO_SERVICE, "supervisor")
        procs.spawn("supervisor-2", *DEMO_SERVICE, "supervisor")
        procs.spawn("handoff-validator", *DEMO_SERVICE, "handoff-validator")
        procs.spawn("policy-guard", *DEMO_SERVICE, "policy-guard")
        procs.spawn("auditor", *DEMO_SERVICE, "auditor")
        for kind in kinds_of_agents:
            procs.spawn(f"agent-{kind}", *DEMO_SERVICE, "agent", "--kind", kind)

        # Every service is listening once each role confirms a harmless command (RESUME of what is not halted).
        deadline = time.monotonic() + 120
        while not (warm := await control(ControlAction.RESUME, timeout_s=3.0, settle_s=1.0)).ok:
            assert time.monotonic() < deadline, f"{warm.missing} never confirmed; dead: {procs.dead()}"
        assert Counter(c.role for c in warm.confirmations)["supervisor"] == 2

        outcomes: dict[str, Outcome] = {}
        arrived = asyncio.Condition()

        async def collect() -> None:
            async with contextlib.aclosing(client.outcomes()) as stream:
                async for outcome in stream:
                    outcomes.setdefault(outcome.envelope.workflow_id, outcome)
                    async with arrived:
                        arrived.notify_all()

        async def outcomes_of(ids: set[str], timeout_s: float = 180) -> None:
            try:
                async with arrived:
                    await asyncio.wait_for(arrived.wait_for(lambda: ids <= set(outcomes)), timeout_s)
            except TimeoutError:
                pytest.fail(f"{len(ids - set(outcomes))} workflows without an outcome; dead: {procs.dead()}")

        collector = asyncio.create_task(collect())
        for sub in submissions:
            await client.submit(sub.workflow_type, sub.context, tenant_id=sub.tenant_id, workflow_id=sub.workflow_id)
        async with arrived:
            await asyncio.wait_for(arrived.wait_for(lambda: len(outcomes) >= WORKFLOWS // 5), 120)

        # Mid-run: kill everything. Wait long enough to hear both supervisor replicas.
        ended_before = set(outcomes)
        report = await control(ControlAction.HALT, timeout_s=10.0, settle_s=2.0)
        assert report.ok, report.lines()
        assert {c.role for c in report.confirmations} == expected_roles
        assert Counter(c.role for c in report.confirmations)["supervisor"] == 2
        confirmed_at = {c.role: c.at for c in report.confirmations}
        latencies = latency_by_role(report)
        (tmp_path / "kill-latency.json").write_text(json.dumps(latencies, indent=2, sort_keys=True))
        print("\n".join(["", *report.lines()]))
        last_confirmation = max(confirmed_at.values())

        await outcomes_of({s.workflow_id for s in submissions})

        # A task arriving while everything is halted: refused, one outcome, nothing runs.
        await client.submit(
            refused.workflow_type, refused.context, tenant_id=refused.tenant_id, workflow_id=refused.workflow_id
        )
        await outcomes_of({refused.workflow_id}, 60)
        assert outcome_key(outcomes[refused.workflow_id]) == KILLED_KEY

        # No tool executed after its agent confirmed, nor any after the last confirmation.
        executed = world.executions_after(0)
        late = [e for e in executed if e["at"] > confirmed_at[agent_of_tool[e["tool"]]]]
        assert late == [], f"{len(late)} tool executions after their agent confirmed: {late[:5]}"
        assert [e for e in executed if e["at"] > last_confirmation] == []
        seq_after_kill = world.last_execution()

        # `baton resume --all`, the CLI itself, as an operator runs it; then new work runs again.
        cli = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "baton", "resume", "--all", "--reason", "e2e over", "--timeout", "10"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert all(f"confirmed  {role}" in cli.stdout for role in expected_roles), cli.stdout
        await client.submit(
            resumed.workflow_type, resumed.context, tenant_id=resumed.tenant_id, workflow_id=resumed.workflow_id
        )
        await outcomes_of({resumed.workflow_id}, 60)
        collector.cancel()
        assert outcome_key(outcomes[resumed.workflow_id]) == expected[resumed.workflow_id] != KILLED_KEY
        assert world.last_execution() > seq_after_kill  # tools run again after the resume

        # Every workflow ended once: as it would have without the kill, or halted KILLED; nothing else.
        got = {wf: outcome_key(o) for wf, o in outcomes.items()}
        unexpected = {
            s.workflow_id: (got[s.workflow_id], expected[s.workflow_id])
            for s in submissions
            if got[s.workflow_id] not in (expected[s.workflow_id], KILLED_KEY)
        }
        assert unexpected == {}, f"{len(unexpected)} workflows ended otherwise: {unexpected}"
        killed = [s.workflow_id for s in submissions if got[s.workflow_id] == KILLED_KEY]
        assert killed, "the kill came after every workflow had ended: not mid-run"
        assert len(killed) < WORKFLOWS, "the kill came before any workflow ended: not mid-run"
        assert ended_before.isdisjoint(killed)  # what had ended before the kill kept its outcome
        # Every halt a supervisor confirmed ended KILLED (more may have: an agent refused a step before its
        # supervisor read the command).
        assert len(killed) >= sum(c.halted for c in report.confirmations) > 0

        outcome_ids: dict[str, set[str]] = {}
        dead: list[DeadLettered] = []

        async def tally(record: BusRecord) -> None:
            event = await serde.decode(record.value)
            if isinstance(event, DeadLettered):
                dead.append(event)
            elif outcome_key(event) is not None:
                outcome_ids.setdefault(event.envelope.workflow_id, set()).add(event.envelope.event_id)

        await bus.replay([topics.OUTCOMES, topics.DEAD_LETTER], tally)
        assert dead == [], [(d.source_topic, d.reason_code, d.reason) for d in dead]
        everyone = {s.workflow_id for s in (*submissions, refused, resumed)}
        assert {wf: len(ids) for wf, ids in outcome_ids.items()} == dict.fromkeys(everyone, 1)
        assert world.verify().ok

        # `baton audit trace` of a killed workflow shows the kill of everything (once the auditor has caught up).
        trace = ""
        deadline = time.monotonic() + 60
        while "KILL SWITCH HALT ALL by pytest" not in trace and time.monotonic() < deadline:
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "baton", "audit", "trace", killed[0]],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            trace = done.stdout
            await asyncio.sleep(0.5)
        assert "KILL SWITCH HALT ALL by pytest" in trace and "OUTCOME halted KILLED" in trace, trace
        assert not procs.dead(), procs.dead()
        print(
            f"kill --all mid-run: {len(killed)} of {WORKFLOWS} halted KILLED, {WORKFLOWS - len(killed)} ended as "
            f"declared; slowest confirmation per role (ms): {json.dumps(latencies, sort_keys=True)}"
        )
    finally:
        procs.stop_all()
        await bus.stop()
        world.close()
