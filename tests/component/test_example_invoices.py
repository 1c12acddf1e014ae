"""The invoice example (examples/invoices) runs on the embedded bus exactly as docs/your-first-workflow.md
says: every command of the guide up to its Kafka section, word for word, in a fresh copy of the project."""

from __future__ import annotations

from pathlib import Path

import httpx

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
    shell,
)
from tests.harness.guide import guide_commands

KAFKA_SECTION = "8. Run it on Kafka"


def test_the_guide_runs_the_invoice_example_on_the_embedded_bus(tmp_path: Path) -> None:
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
