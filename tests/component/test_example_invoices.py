"""The invoice example (examples/invoices) runs on the embedded bus exactly as docs/your-first-workflow.md
says (every command of the guide up to its Kafka section, word for word, in a fresh copy of the project), and
its MCP payment, which knows nothing of idempotency keys, happens once however often its step is delivered."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from baton import topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.contracts.models import StepRequested, WorkflowCompleted
from baton.identity import CLIENT
from baton.testbed.processes import ServiceProcesses
from baton.workflows import load_workflows
from baton_demo.mesh import start_mesh
from tests.harness.example_invoices import (
    EXPECTED,
    GUIDE,
    PAID,
    PO_SERVER_PORT,
    SETUP,
    copy_example,
    local_outcomes,
    payments,
    po_requests,
    po_server_port,
    shell,
)
from tests.harness.guide import guide_commands, wait_for_port

KAFKA_SECTION = "8. Run it on Kafka"


@pytest.fixture
def po_port() -> Iterator[None]:
    """The example's purchase-order server port, held for this test."""
    with po_server_port():
        yield


def test_the_guide_runs_the_invoice_example_on_the_embedded_bus(tmp_path: Path, po_port: None) -> None:
    project = copy_example(tmp_path)
    commands = guide_commands(GUIDE)
    sections = [c.section for c in commands]
    assert KAFKA_SECTION in sections, f"the guide has no section {KAFKA_SECTION!r}; it has {sorted(set(sections))}"
    embedded = commands[: sections.index(KAFKA_SECTION)]
    assert {c.command for c in embedded} >= set(SETUP), "the guide no longer starts as the test expects"
    term = shell(project, tmp_path / "logs", emulated=SETUP)
    try:
        for line in embedded:
            term.run(line)

        # Each invoice ended as it must, and nothing else happened on the bus.
        local = term.outputs["baton local --workflows workflows --tasks tasks.jsonl"]
        assert local_outcomes(local) == EXPECTED, local
        assert "5 workflows: 3 completed, 0 halted, 2 escalated" in local, local
        assert "0 without an outcome, 0 dead letters, 0 duplicate outcomes" in local, local
        assert "does not match purchase order PO-503" in local  # the reason says what is wrong

        # Exactly one payment for each paid invoice; none for the mismatch or the one awaiting approval.
        assert payments(project) == PAID
        assert "INV-1001" in term.outputs["cat data/payments.jsonl"]

        # The HTTP tool reached the purchase-order server with its bearer token, once per invoice; the
        # server refuses a request without it.
        requests = po_requests(project)
        assert sorted(str(r["invoice_id"]) for r in requests) == [f"INV-100{i}" for i in range(1, 6)]
        assert all(r["authorized"] is True for r in requests), requests
        refused = httpx.post(
            f"http://127.0.0.1:{PO_SERVER_PORT}/check",
            json={"invoice_id": "INV-1001", "po_number": "PO-501", "vendor": "Northwind Paper", "amount": 1.0},
        )
        assert refused.status_code == 401

        # The audit verifies and tells the mismatched invoice's story.
        verify = next(v for k, v in term.outputs.items() if k.endswith("baton audit verify"))
        assert verify.startswith("audit OK"), verify
        trace = term.outputs["baton audit trace inv-1003"]
        assert "OUTCOME escalated to accounts-payable: TOOL_PO_MISMATCH" in trace, trace
        assert "check_purchase_order" in trace and "schedule_payment" in trace, trace
    finally:
        term.procs.stop_all()


def _forget_example_modules() -> None:
    for name in [m for m in sys.modules if m.partition(".")[0] in ("invoice_tools", "po_server", "payments_server")]:
        del sys.modules[name]


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_redelivered_or_rerun_payment_step_pays_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, po_port: None
) -> None:
    """The MCP payments server pays on every call; Baton's step ledger (a redelivered step) and its tool ledger
    (the step run again, as a retry does) make it pay once."""
    project = copy_example(tmp_path)
    monkeypatch.chdir(project)  # the tools and the MCP server keep their data in data/ under the project
    monkeypatch.syspath_prepend(str(project))
    _forget_example_modules()  # another test's module of the same name must not stand in for the example's
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("BATON_WORKFLOW_DIR", str(project / "workflows"))
    monkeypatch.setenv("ACME_PO_TOKEN", "test-token")
    load_workflows.cache_clear()
    from invoice_tools.store import seed

    seed()
    servers = ServiceProcesses(env={"PYTHONPATH": str(project)}, logdir=tmp_path, cwd=project)
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    try:
        wait_for_port(PO_SERVER_PORT, alive=servers.spawn("po_server", "po_server.py"))
        mesh = await start_mesh(bus, workflow_dir=project / "workflows", ledger_db=project / ".baton" / "ledger.db")
        try:
            client = BatonClient(mesh.events("test-client", role=CLIENT))
            await client.submit("invoice_processing", {"invoice_id": "INV-1001"}, tenant_id="acme", workflow_id="w1")
            async with asyncio.timeout(30), contextlib.aclosing(client.outcomes()) as stream:
                outcome = await anext(stream)
            assert isinstance(outcome, WorkflowCompleted), outcome
            assert payments(project) == {"INV-1001": 1}

            steps: list[tuple[BusRecord, StepRequested]] = []

            async def keep(record: BusRecord) -> None:
                event = await mesh.serde.decode(record.value)
                if isinstance(event, StepRequested):
                    steps.append((record, event))

            await bus.replay([topics.agent_steps("payer")], keep)
            [(record, step)] = steps
            payer = mesh.apps["agent:payer"].handlers
            assert (payer.steps_run, payer.steps_replayed) == (1, 0)

            # Redelivered: the very record again. The step ledger re-publishes its recorded events.
            await bus.publish(record.topic, record.value, key=record.key, headers=record.headers)
            await _until(lambda: payer.steps_replayed == 1, "the payer to see the redelivered step")

            # Run again, as the supervisor's retry would: the tool ledger returns the first payment's result.
            again = step.model_copy(
                update={"attempt": 2, "envelope": step.envelope.model_copy(update={"event_id": str(uuid.uuid4())})}
            )
            await mesh.events("supervisor").publish(record.topic, again)
            await _until(lambda: payer.steps_run == 2, "the payer to run the step again")
        finally:
            await mesh.stop()
    finally:
        await bus.stop()
        servers.stop_all()
        load_workflows.cache_clear()
        _forget_example_modules()
    assert payments(project) == {"INV-1001": 1}
    with contextlib.closing(sqlite3.connect(project / ".baton" / "ledger.db")) as ledger:
        rows = ledger.execute("SELECT state, runs, replays FROM tool_ledger WHERE tool = 'pay_invoice'").fetchall()
    assert rows == [("done", 1, 1)], rows  # called once, its result handed back once instead of a second call
