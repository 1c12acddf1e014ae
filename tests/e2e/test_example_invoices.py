"""The invoice example (examples/invoices) runs end to end on a real Kafka broker exactly as
docs/your-first-workflow.md says: the whole guide word for word in a fresh copy of the project (the embedded
run first, then every service as its own process on Kafka), with the test's broker instead of the one the
guide starts in a second terminal."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from baton import topics
from baton.bus.base import BusRecord
from baton.bus.kafka import KafkaBus
from baton.contracts.models import DeadLettered
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from tests.harness.example_invoices import (
    EXPECTED,
    GUIDE,
    PAID,
    SETUP,
    copy_example,
    local_outcomes,
    payments,
    po_requests,
    po_server_port,
    shell,
)
from tests.harness.expected import outcome_key
from tests.harness.guide import guide_commands
from tests.harness.kafka_broker import KafkaBroker

pytestmark = pytest.mark.e2e

GUIDE_BROKER = "127.0.0.1:9092"
BROKER_LINES = {
    "make kafka": "the broker fixture fetched Kafka's jars",
    # tests/integration/test_dev_kafka.py runs this command itself.
    ".venv/bin/baton dev kafka --port 9092": "the test's own broker, on a free port",
}


@pytest.fixture
def po_port() -> Iterator[None]:
    """The example's purchase-order server port, held for this test."""
    with po_server_port():
        yield


async def test_the_guide_runs_the_invoice_example_on_kafka(
    own_broker: KafkaBroker, tmp_path: Path, po_port: None
) -> None:
    project = copy_example(tmp_path)
    commands = guide_commands(GUIDE)
    assert {c.command for c in commands} >= set(SETUP) | set(BROKER_LINES)
    term = shell(
        project,
        tmp_path / "logs",
        emulated={**SETUP, **BROKER_LINES},
        substitutions={GUIDE_BROKER: own_broker.bootstrap},
    )
    try:
        for line in commands:
            await asyncio.to_thread(term.run, line, timeout_s=240)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{term.tails()}") from exc
    finally:
        term.procs.stop_all()

    # The embedded run, first in the guide, ended as it must.
    assert local_outcomes(term.outputs["baton local --workflows workflows --tasks tasks.jsonl"]) == EXPECTED

    # On Kafka: the five outcomes `baton outcomes --count 5` printed, each as on the embedded bus.
    printed = [json.loads(line) for line in term.outputs["baton outcomes --count 5"].splitlines()]
    got = {
        o["envelope"]["workflow_id"]: ("completed", "COMPLETED")
        if "reason_code" not in o
        else ("escalated" if "escalated_to" in o else "halted", o["reason_code"])
        for o in printed
    }
    assert got == EXPECTED, printed
    assert term.outputs["baton publish --tasks tasks.jsonl"].split() == sorted(EXPECTED)

    # The seed before the Kafka run forgot the embedded run's effects: these are the Kafka run's alone.
    assert payments(project) == PAID
    requests = po_requests(project)
    assert sorted(str(r["invoice_id"]) for r in requests) == sorted(f"INV-100{i}" for i in range(1, 6))
    assert all(r["authorized"] is True for r in requests), requests

    # The audit is complete against the broker's log, and tells the story of the invoice awaiting approval.
    assert term.outputs["baton audit verify --against-kafka"].startswith("audit OK")
    assert "OUTCOME escalated to accounts-payable: APPROVAL_REQUIRED" in term.outputs["baton audit trace inv-1004"]

    # What crossed the broker: one outcome event per workflow, nothing dead-lettered.
    serde = AvroSerde(LocalSchemaRegistry())
    bus = KafkaBus(own_broker.bootstrap, client_id="example-test")
    await bus.start()
    outcome_ids: dict[str, set[str]] = {}
    kinds: dict[str, tuple[str, str]] = {}
    dead: list[str] = []

    async def tally(record: BusRecord) -> None:
        event = await serde.decode(record.value)
        if isinstance(event, DeadLettered):
            dead.append(f"{event.source_topic}: {event.reason_code} ({event.consumer_group})")
        elif (key := outcome_key(event)) is not None:
            outcome_ids.setdefault(event.envelope.workflow_id, set()).add(event.envelope.event_id)
            kinds[event.envelope.workflow_id] = key

    try:
        await bus.replay([topics.OUTCOMES, topics.DEAD_LETTER], tally)
    finally:
        await bus.stop()
    assert dead == []
    assert kinds == EXPECTED
    assert Counter({wf: len(ids) for wf, ids in outcome_ids.items()}) == Counter(dict.fromkeys(EXPECTED, 1))
