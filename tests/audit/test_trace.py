"""`baton audit trace` of a demo workflow shows its whole lineage."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.trace import render_timeline, trace_workflow
from baton_demo.demo import run_demo
from baton_demo.faults import Fault
from baton_demo.mesh import AUDIT_ANCHOR_FILE, AUDIT_VERIFY_KEY_FILE


@pytest.fixture(scope="module")
async def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo run with a truncation and a loop injected; its world and audit stay here."""
    tmp_path = tmp_path_factory.mktemp("demo")
    report = await run_demo(
        workflows=24,
        faults_per_kind=1,
        faults=(Fault.TRUNCATE, Fault.LOOP),
        world_dir=tmp_path,
        console=Console(file=io.StringIO()),
        timeout_s=60,
    )
    assert report.ok and report.audit_records > 0 and report.audit_problems == []
    return tmp_path


async def test_trace_of_demo_workflows_shows_every_step(demo_dir: Path) -> None:
    store = SqliteAuditStore(demo_dir / "audit.db")
    timelines = {}
    for wf in (f"wf-{i:05d}" for i in range(24)):
        timelines[wf] = render_timeline(wf, await trace_workflow(store, wf))
    await store.close()
    everything = "\n".join(timelines.values())
    for expected in (
        "task: ",
        "checkpoint: context v1",
        "step: ",
        "decision: ",
        "considered [",
        "chose ",
        "confidence ",
        "handoff proposed: ",
        " sha ",
        " parent ",
        "handoff ACCEPTED",
        "diff +[",
        "handoff REJECTED TRUNCATED",
        "result: ",
        "OUTCOME completed",
        "OUTCOME halted BUDGET_LOOP (budget trip)",
        "OUTCOME escalated",
    ):
        assert expected in everything, f"no {expected!r} in any demo workflow's lineage"
    one = next(t for t in timelines.values() if "OUTCOME completed" in t)
    lines = one.splitlines()[1:]
    assert lines[0].split()[0] == "1" and "task: " in lines[0]
    assert [int(line.split()[0]) for line in lines] == list(range(1, len(lines) + 1))


def _audit_cli(store: Path, *args: str, demo: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI on a store, trusting the public key and the anchor file the demo wrote next to it."""
    demo = demo or store.parent
    env = {
        **os.environ,
        "BATON_AUDITOR_SQLITE_PATH": str(store),
        "BATON_AUDITOR_VERIFY_KEY_FILE": str(demo / AUDIT_VERIFY_KEY_FILE),
        "BATON_AUDITOR_ANCHOR_FILE": str(demo / AUDIT_ANCHOR_FILE),
    }
    return subprocess.run(
        [sys.executable, "-m", "baton", "audit", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_audit_cli_traces_and_verifies(demo_dir: Path) -> None:
    ok = _audit_cli(demo_dir / "audit.db", "trace", "wf-00001", "--json")
    assert ok.returncode == 0 and '"event_type": "TaskRequested"' in ok.stdout
    missing = _audit_cli(demo_dir / "audit.db", "trace", "no-such-workflow")
    assert missing.returncode == 1 and "no audit records" in missing.stdout
    verify = _audit_cli(demo_dir / "audit.db", "verify")
    assert verify.returncode == 0 and "audit OK" in verify.stdout


def test_baton_audit_verify_fails_naming_the_tampered_record(demo_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "audit.db"
    shutil.copy(demo_dir / "audit.db", copy)
    db = sqlite3.connect(copy)
    db.execute("DROP TRIGGER audit_records_no_update")
    record_id, doc = db.execute(
        "SELECT record_id, doc FROM audit_records WHERE topic = 'baton.outcomes' ORDER BY record_id LIMIT 1"
    ).fetchone()
    db.execute(
        "UPDATE audit_records SET doc = ? WHERE record_id = ?", (doc.replace('"tenant-', '"tenant-evil-', 1), record_id)
    )
    db.commit()
    db.close()
    result = _audit_cli(copy, "verify", demo=demo_dir)
    assert result.returncode == 1
    assert f"first problem: record {record_id}" in result.stderr and "modified" in result.stderr


def test_a_forgery_is_marked_in_the_lineage() -> None:
    from baton.audit.trace import render_timeline

    step = {"agent": "refund_issuer", "attempt": 1, "snapshot": {"version": 3}}
    docs = [
        {
            "workflow_seq": 1,
            "occurred_at": "",
            "topic": "baton.agents.refund_issuer.steps",
            "event_type": "StepRequested",
            "payload": step,
            "signer": "supervisor",
        },
        {
            "workflow_seq": 2,
            "occurred_at": "",
            "topic": "baton.agents.refund_issuer.steps",
            "event_type": "StepRequested",
            "payload": step,
            "signer": "UNAUTHENTICATED:UNKNOWN_SIGNER",
        },
    ]
    genuine, forged = render_timeline("wf", docs).splitlines()[1:]
    assert "not acted on" not in genuine
    assert forged.endswith("[UNAUTHENTICATED:UNKNOWN_SIGNER: not acted on]")
