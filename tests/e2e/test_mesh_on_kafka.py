"""The whole mesh as separate processes on a real Kafka broker: 200 workflows, injected faults, a context of
600 KB and one over the limit, 2 % of every service's publishes failing, two supervisor replicas, one killed
mid-run and replaced, then poison records on every consumed topic and more work. Every workflow must end
exactly as the same submissions end on the embedded mesh, with one outcome each, and the dead-letter topic
must hold exactly the poison."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from pathlib import Path

import pytest

from baton import topics
from baton.bus.base import BusRecord
from baton.bus.kafka import KafkaBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import DeadLettered, Event, HandoffAccepted, HandoffRejected, StepCompleted
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.ledger import Ledger
from baton.messaging import EventBus
from baton.workflows import agent_kinds, load_workflows
from baton_demo.chaos import consumed_topics, forged_outcome, poison_records
from baton_demo.demo import DETECTED_BY, _eligible, _inputs
from baton_demo.faults import Fault, FaultPlan
from baton_demo.world import World, seeded_tenant
from tests.harness.expected import Submission, expected_outcomes, outcome_key
from tests.harness.identities import DOMAIN, trust, write_keys
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.processes import ServiceProcesses

pytestmark = pytest.mark.e2e

WORKFLOWS = 200
# Services run with the demo's faults (BATON_DEMO_*): `python -m baton_demo.service SERVICE`.
DEMO_SERVICE = ("-m", "baton_demo.service")
HANDOFF_FAULTS = (Fault.TRUNCATE, Fault.STALE, Fault.TAMPER)


async def test_200_workflows_on_kafka_with_faults_and_a_supervisor_killed_mid_run(
    own_broker: KafkaBroker, tmp_path: Path
) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=300, seed=11)
    specs = load_workflows()
    kinds = sorted(specs)
    items = [(f"e2e-{i:04d}", specs[kinds[i % 2]]) for i in range(WORKFLOWS)]
    plan = FaultPlan.spread([(wf, _eligible(s)) for wf, s in items], (*HANDOFF_FAULTS, Fault.LOOP), per_fault=4, seed=3)
    plan.dump(tmp_path / "faults.json")
    onboarding = specs["customer_onboarding"]
    submissions = [
        Submission(wf, spec.name, _inputs(spec, world, i), seeded_tenant(i)) for i, (wf, spec) in enumerate(items)
    ]
    # Checkpoints used to carry the context twice: 600 KB made a 1.2 MB message Kafka refused.
    submissions.append(
        Submission(
            "e2e-big", onboarding.name, {**_inputs(onboarding, world, 250), "notes": "n" * 600_000}, seeded_tenant(250)
        )
    )
    submissions.append(
        Submission("e2e-huge", onboarding.name, {**_inputs(onboarding, world, 251), "notes": "n" * 1_200_000}, "t")
    )
    submissions.append(Submission("e2e-undeclared", "no_such_workflow", {}, "tenant-0"))
    # A task of one tenant naming another tenant's customer: refused at admission, nothing of theirs touched.
    submissions.append(
        Submission("e2e-cross-tenant", onboarding.name, _inputs(onboarding, world, 252), seeded_tenant(253))
    )
    # Submitted after poison records went into every consumed topic: proof every service still processes.
    later = [
        Submission(f"e2e-later-{i}", spec.name, _inputs(spec, world, 260 + i), seeded_tenant(260 + i))
        for i, spec in enumerate(specs[k] for k in kinds * 5)
    ]
    expected = await expected_outcomes(
        [*submissions, *later], plan=plan, world_seed=(300, 11), workdir=tmp_path / "expected"
    )
    assert expected["e2e-big"][1] != "CONTEXT_TOO_LARGE"  # under the limit: admitted, carried, decided
    assert expected["e2e-huge"] == ("halted", "CONTEXT_TOO_LARGE")
    assert expected["e2e-undeclared"] == ("halted", "UNKNOWN_WORKFLOW_TYPE")
    assert expected["e2e-cross-tenant"] == ("halted", "ADMISSION_CROSS_TENANT")  # refused before any agent
    env = {
        "BATON_BUS": "kafka",
        # No approval service runs here: a refund that needs a human ends escalated to its queue.
        "BATON_SUPERVISOR_AWAIT_APPROVALS": "false",
        "BATON_KAFKA_BOOTSTRAP": own_broker.bootstrap,
        "BATON_KEYS_DIR": str(write_keys(tmp_path / "keys")),
        "BATON_LOG_LEVEL": "WARNING",
        "BATON_WORLD_DB": str(tmp_path / "world.db"),
        "BATON_AGENT_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_HANDOFF_VALIDATOR_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_POLICY_GUARD_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_SUPERVISOR_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_DEMO_FAULT_PLAN": str(tmp_path / "faults.json"),
        "BATON_SUPERVISOR_BACKOFF_BASE_S": "0.05",
        # Every service: this share of its publishes fails, as a broker timing out would.
        "BATON_DEMO_PUBLISH_FAILURE_RATE": "0.02",
    }
    procs = ServiceProcesses(env=env, logdir=tmp_path)
    serde = AvroSerde(LocalSchemaRegistry())
    bus = KafkaBus(own_broker.bootstrap, client_id="e2e-test")
    await bus.start()
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
            *(topics.agent_steps(k) for k in agent_kinds(specs)),
        ]
    )
    try:
        procs.spawn("supervisor-1", *DEMO_SERVICE, "supervisor")
        procs.spawn("supervisor-2", *DEMO_SERVICE, "supervisor")  # two replicas share the workflows by partition
        procs.spawn("handoff-validator", *DEMO_SERVICE, "handoff-validator")
        procs.spawn("policy-guard", *DEMO_SERVICE, "policy-guard")
        for kind in agent_kinds(specs):
            procs.spawn(f"agent-{kind}", "-m", "baton_demo.agent", "--kind", kind)
        client = BatonClient(EventBus(bus=bus, serde=serde, producer="e2e-client", trust=trust("client")))
        for sub in submissions:
            await client.submit(sub.workflow_type, sub.context, tenant_id=sub.tenant_id, workflow_id=sub.workflow_id)

        outcomes: dict[str, Outcome] = {}
        arrived = asyncio.Condition()
        killed = False

        async def collect() -> None:
            nonlocal killed
            async with contextlib.aclosing(client.outcomes()) as stream:
                async for outcome in stream:
                    outcomes.setdefault(outcome.envelope.workflow_id, outcome)
                    if len(outcomes) >= len(submissions) // 4 and not killed:
                        procs.kill("supervisor-1")  # mid-run: its partitions move to supervisor-2 ...
                        procs.spawn("supervisor-3", *DEMO_SERVICE, "supervisor")  # ... and some on to a replacement
                        killed = True
                    async with arrived:
                        arrived.notify_all()

        async def outcomes_of(wanted: list[Submission]) -> None:
            ids = {s.workflow_id for s in wanted}
            try:
                async with arrived:
                    await asyncio.wait_for(arrived.wait_for(lambda: ids <= set(outcomes)), timeout=400)
            except TimeoutError:
                pytest.fail(
                    f"{len(ids - set(outcomes))} workflows without an outcome; dead processes: {procs.dead()}\n"
                    + procs.tail("supervisor-3")
                )

        collector = asyncio.create_task(collect())
        await outcomes_of(submissions)
        assert killed

        # Poison and forgeries of every kind on every topic a service (or the client) consumes; a supervisor
        # restarted after them restores past the forged checkpoints; then more work, which must still get
        # done, with a forged halt of one of those workflows sent to the client before its true outcome.
        consumed = [*consumed_topics(agent_kinds(specs)), topics.OUTCOMES]
        poison = await poison_records(serde, consumed, DOMAIN)
        for p in poison:
            await bus.publish(p.topic, p.value, key=p.key, headers=p.headers)
        procs.kill("supervisor-2")
        procs.spawn("supervisor-4", *DEMO_SERVICE, "supervisor")
        for sub in later:
            await client.submit(sub.workflow_type, sub.context, tenant_id=sub.tenant_id, workflow_id=sub.workflow_id)
        forged = await forged_outcome(
            serde, DOMAIN, workflow_id=later[0].workflow_id, workflow_type=later[0].workflow_type
        )
        await bus.publish(forged.topic, forged.value, key=forged.key, headers=forged.headers)
        poison.append(forged)
        await outcomes_of(later)
        collector.cancel()

        got = {wf: outcome_key(o) for wf, o in outcomes.items()}
        wrong = {wf: (got.get(wf), want) for wf, want in expected.items() if got.get(wf) != want}
        assert not wrong, f"{len(wrong)} workflows ended otherwise than on the embedded mesh: {wrong}"
        assert set(got) == set(expected)

        # What crossed the broker: one outcome per workflow (a re-sent one has the same event id), and
        # exactly the dead letters the poison deserves (a re-sent one has the same event id too).
        outcome_ids: dict[str, set[str]] = {}
        dead: dict[str, DeadLettered] = {}
        injected = {(p.key, p.value) for p in poison}

        async def tally(record: BusRecord) -> None:
            if (record.key, record.value) in injected:
                return  # what the poison phase put there
            event = await serde.decode(record.value)
            if isinstance(event, DeadLettered):
                dead[event.envelope.event_id] = event
            elif outcome_key(event) is not None:
                outcome_ids.setdefault(event.envelope.workflow_id, set()).add(event.envelope.event_id)

        await bus.replay([topics.OUTCOMES, topics.DEAD_LETTER], tally)
        parked = Counter((d.source_topic, d.reason_code) for d in dead.values() if d.consumer_group != "chaos")
        assert parked == Counter((p.topic, p.expect) for p in poison if p.expect is not None)
        assert {wf: len(ids) for wf, ids in outcome_ids.items()} == dict.fromkeys(expected, 1)

        # What crossed the broker: every verdict and step result.
        seen: list[Event] = []

        async def keep(record: BusRecord) -> None:
            if (record.key, record.value) in injected:
                return  # what the poison phase put there
            seen.append(await serde.decode(record.value))

        await bus.replay([topics.HANDOFF_VERDICTS, topics.STEP_RESULTS], keep)
        detections: dict[str, set[str]] = {}
        for ev in seen:
            if isinstance(ev, HandoffRejected):
                detections.setdefault(ev.envelope.workflow_id, set()).add(ev.reason_code.value)
            elif isinstance(ev, StepCompleted) and ev.error_code:
                detections.setdefault(ev.envelope.workflow_id, set()).add(ev.error_code)
        for wf, (agent, fault) in plan.faults.items():
            assert DETECTED_BY[fault] in detections.get(wf, set()), f"{fault} at {agent} in {wf} was not detected"
        # Nothing corrupt was ever accepted, so no agent ever acted on a corrupted context.
        rejected = {ev.envelope.causation_id for ev in seen if isinstance(ev, HandoffRejected)}
        for ev in seen:
            if isinstance(ev, HandoffAccepted):
                raw = ev.snapshot.context_json.encode()
                assert len(raw) == ev.snapshot.size_bytes and hashlib.sha256(raw).hexdigest() == ev.snapshot.sha256
                if ev.envelope.causation_id in rejected:
                    pytest.fail(f"proposal {ev.envelope.causation_id} was both rejected and accepted")

        report = world.verify()
        assert report.ok, report.problems
        assert report.counts["tool_calls_repeated"] == 0, "a tool call reached the world twice"
        ledger = Ledger(tmp_path / "ledger.db")
        steps = ledger.verify()
        ledger.close()
        assert steps.ok, steps.problems
        assert steps.counts["steps_started_twice"] == 0, "a step ran twice"
        assert steps.counts["tool_calls_run_twice"] == 0, "a tool call ran twice"
        assert steps.counts["steps"] >= WORKFLOWS
        assert not procs.dead(), procs.dead()
        # The stall guard re-sends what a workflow waits on when an answer went missing: here nothing may
        # have gone missing (it once caught a step request lost to a failed publish).
        logs = [
            line
            for name in ("supervisor-2", "supervisor-3", "supervisor-4")
            for line in (tmp_path / f"{name}.log").read_text().splitlines()
        ]
        nudges = [line for line in logs if "has not moved" in line]
        assert nudges == [], nudges
        # The restore after the forgeries read the forged checkpoints and adopted none of them.
        refused = [line for line in logs if "not adopted" in line]
        codes = ("UNSIGNED", "UNKNOWN_SIGNER", "BAD_SIGNATURE", "NOT_AUTHORIZED")
        assert len(refused) >= 3 and all(any(code in line for code in codes) for line in refused), refused
    finally:
        procs.stop_all()
        await bus.stop()
        world.close()
