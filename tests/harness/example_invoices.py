"""What the invoice example (examples/invoices) must do, shared by its embedded and its Kafka test."""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.harness.guide import GuideShell, port_is_free
from tests.harness.kafka_broker import REPO

GUIDE = REPO / "docs" / "your-first-workflow.md"
EXAMPLE = REPO / "examples" / "invoices"
PO_SERVER_PORT = 8765  # workflows/tools.yaml calls it there
PORT_LOCK = Path(tempfile.gettempdir()) / f"baton-example-port-{PO_SERVER_PORT}.lock"

# Each invoice's outcome: (kind, reason code), as tests.harness.expected.outcome_key gives it.
EXPECTED = {
    "inv-1001": ("completed", "COMPLETED"),
    "inv-1002": ("completed", "COMPLETED"),
    "inv-1003": ("escalated", "TOOL_PO_MISMATCH"),  # bills 11 wrenches, the purchase order authorises 10
    "inv-1004": ("escalated", "APPROVAL_REQUIRED"),  # 18,500.00: over the 10,000 approval threshold
    "inv-1005": ("completed", "COMPLETED"),
}
PAID = {"INV-1001": 1, "INV-1002": 1, "INV-1005": 1}

# Setup lines of the guide the test does itself.
SETUP = {
    "make deps": "the test runs in this checkout's .venv, which `make deps` made",
    "source .venv/bin/activate": "GuideShell puts the .venv first on PATH",
    "cd examples/invoices": "the test works in a fresh copy of examples/invoices",
}


@contextmanager
def po_server_port(timeout_s: float = 900.0) -> Iterator[None]:
    """Hold the example's fixed port for one test: test runs of other checkouts on this machine wait their turn."""
    with PORT_LOCK.open("a") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{PORT_LOCK} stayed locked for {timeout_s}s") from None
                time.sleep(0.2)
        try:
            assert port_is_free(PO_SERVER_PORT), f"port {PO_SERVER_PORT} is taken: the example's po_server needs it"
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def copy_example(tmp_path: Path) -> Path:
    """A fresh copy of the example project, as a clone has it (no data, no state, no keys)."""
    return Path(
        shutil.copytree(
            EXAMPLE, tmp_path / "invoices", ignore=shutil.ignore_patterns("data", ".baton", "keys", "__pycache__")
        )
    )


def shell(
    project: Path, logdir: Path, *, emulated: Mapping[str, str], substitutions: Mapping[str, str] | None = None
) -> GuideShell:
    """A terminal in the project copy; it waits for po_server.py to listen before the next command."""
    logdir.mkdir(parents=True, exist_ok=True)
    return GuideShell(
        cwd=project,
        logdir=logdir,
        emulated=emulated,
        substitutions=substitutions or {},
        ready_ports={"python po_server.py &": PO_SERVER_PORT},
    )


def local_outcomes(output: str) -> dict[str, tuple[str, str]]:
    """The outcomes `baton local` printed: `<workflow id>  <kind>[  <reason code>  <reason>]` per line."""
    found: dict[str, tuple[str, str]] = {}
    for line in output.splitlines():
        parts = line.split("  ")
        if len(parts) >= 2 and parts[1] in ("completed", "halted", "escalated"):
            found[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "COMPLETED")
    return found


def payments(project: Path) -> Counter[str]:
    """Payments the MCP server made, by invoice (one JSON line each in data/payments.jsonl)."""
    path = project / "data" / "payments.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(json.loads(line)["invoice_id"] for line in lines)


def po_requests(project: Path) -> list[dict[str, object]]:
    """Every request the purchase-order server answered, with whether its bearer token was right."""
    path = project / "data" / "po_requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
