"""The auditor as a process on Kafka, writing MongoDB (FerretDB), SIGKILLed at 20 %, 50 % and 80 % of a
20,000-event run and restarted each time: the audit holds exactly the events produced, chain valid."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from baton import topics
from baton.audit.completeness import KafkaAuditedLog, verify_audit
from baton.audit.keys import encode_signing_key, generate_signing_key
from baton.audit.mongo_store import MongoAuditStore
from baton.audit.verify import verify_store
from baton.bus.kafka import KafkaBus
from baton.context import make_snapshot
from baton.contracts.models import (
    AgentDecision,
    Envelope,
    Event,
    HandoffProposed,
    StepCompleted,
    StepRequested,
    TaskRequested,
    WorkflowCheckpointed,
)
from baton.contracts.serde import AvroSerde
from services.auditor.app import audited_topics
from tests.harness.identities import write_keys
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.processes import ServiceProcesses

pytestmark = pytest.mark.e2e

EVENTS = 20_000
KEY = generate_signing_key()


def _events(n: int) -> list[tuple[str, Event]]:
    """n events of a few kinds over many workflows and topics."""
    out: list[tuple[str, Event]] = []
    snap = make_snapshot({"customer_id": "c-1", "notes": "x" * 64}, version=1)
    i = 0
    while len(out) < n:
        env = Envelope(workflow_id=f"wf-{i % 700}", tenant_id=f"t{i % 3}", producer="load", step_seq=i)
        kinds: list[tuple[str, Event]] = [
            (
                topics.TASKS,
                TaskRequested(envelope=env, workflow_type="support_refund", input_json="{}", requested_by="load"),
            ),
            (
                topics.agent_steps("ticket_lookup"),
                StepRequested(envelope=env, agent="ticket_lookup", attempt=1, snapshot=snap),
            ),
            (
                topics.DECISIONS,
                AgentDecision(
                    envelope=env,
                    agent="ticket_lookup",
                    decision_type="select_tool",
                    input_context_sha256=snap.sha256,
                    confidence=0.9,
                ),
            ),
            (topics.STEP_RESULTS, StepCompleted(envelope=env, agent="ticket_lookup", succeeded=True, snapshot=snap)),
            (topics.HANDOFF_PROPOSALS, HandoffProposed(envelope=env, from_agent="a", to_agent="b", snapshot=snap)),
            (
                topics.CHECKPOINTS,
                WorkflowCheckpointed(envelope=env, workflow_type="support_refund", state="running", snapshot=snap),
            ),
        ]
        topic, event = kinds[i % len(kinds)]
        out.append(
            (topic, event.model_copy(update={"envelope": env.model_copy(update={"event_id": str(uuid.uuid4())})}))
        )
        i += 1
    return out


async def test_auditor_killed_three_times_keeps_exactly_the_events_produced(
    own_broker: KafkaBroker, mongodb_url: str, serde: AvroSerde, tmp_path: Path
) -> None:
    database = f"audit_kill_{uuid.uuid4().hex[:8]}"
    env = {
        "BATON_BUS": "kafka",
        # No approval service runs here: a refund that needs a human ends escalated to its queue.
        "BATON_SUPERVISOR_AWAIT_APPROVALS": "false",
        "BATON_KAFKA_BOOTSTRAP": own_broker.bootstrap,
        "BATON_KEYS_DIR": str(write_keys(tmp_path / "keys")),
        "BATON_LOG_LEVEL": "WARNING",
        "BATON_AUDITOR_STORE": "mongodb",
        "BATON_AUDITOR_MONGODB_URL": mongodb_url,
        "BATON_AUDITOR_MONGODB_DATABASE": database,
        "BATON_AUDITOR_SIGNING_KEY": encode_signing_key(KEY),
        "BATON_AUDITOR_BATCH_SIZE": "1000",
        "BATON_AUDITOR_ANCHOR_EVERY": "2000",
    }
    procs = ServiceProcesses(env=env, logdir=tmp_path)
    bus = KafkaBus(own_broker.bootstrap, client_id="audit-load")
    await bus.start()
    store = MongoAuditStore(mongodb_url, database=database)
    produced = _events(EVENTS)
    try:
        procs.start("auditor-1", "auditor")
        encoded = [(t, await serde.encode(e), e.envelope.workflow_id.encode()) for t, e in produced]

        async def produce() -> None:
            for i in range(0, len(encoded), 500):
                chunk = encoded[i : i + 500]
                await asyncio.gather(*(bus.publish(t, v, key=k) for t, v, k in chunk))

        producer = asyncio.create_task(produce())
        kills = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 900  # a guard against a hang, not a timing (see make bench for those)
        for fraction in (0.2, 0.5, 0.8):
            # Counting scans the collection on the test server: look once a second, not more.
            while await store.count() < EVENTS * fraction:
                assert loop.time() < deadline, (
                    f"audit stuck at {await store.count()}; {procs.tail(f'auditor-{kills + 1}')}"
                )
                assert not procs.dead(), procs.tail(f"auditor-{kills + 1}")
                await asyncio.sleep(1.0)
            kills += 1
            procs.kill(f"auditor-{kills}")  # SIGKILL: wherever it is, mid-batch or between batches
            procs.start(f"auditor-{kills + 1}", "auditor")
        await producer
        while await store.count() < EVENTS:
            assert loop.time() < deadline, f"audit stuck at {await store.count()}"
            assert not procs.dead(), procs.tail(f"auditor-{kills + 1}")
            await asyncio.sleep(1.0)
        procs.stop_all()  # graceful: writes a final anchor

        assert kills == 3
        assert await store.count() == EVENTS
        ids = {doc["event_id"] async for doc in store.stream()}
        assert ids == {e.envelope.event_id for _, e in produced}
        report = await verify_store(store, KEY.public_key())
        assert report.ok, report.problems[:5]
        assert report.records == EVENTS and report.anchors >= 1
        # And from the broker: every record below the group's commits stored once, the tail anchored on the topic.
        whole, _ = await verify_audit(
            store,
            KEY.public_key(),
            anchor_bus=bus,
            log=KafkaAuditedLog(bus, own_broker.bootstrap),
            audited=audited_topics(),
        )
        assert whole.ok, whole.problems[:5]
        assert whole.log_records == EVENTS
    finally:
        procs.stop_all()
        await bus.stop()
        await store.close()
