"""`baton local`: a user's workflow directory run on the embedded bus, every service in this one process.

The same services as on Kafka (supervisor, handoff validator, one agent service per declared agent kind,
auditor), on the embedded bus and the embedded audit store: the tasks of a JSON Lines file go in through
`BatonClient`, each workflow's outcome comes out, and the audit stays in the state directory for
`baton audit verify` and `baton audit trace`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient, Task
from baton.contracts.models import DeadLettered, WorkflowCompleted, WorkflowEscalated, WorkflowHalted
from baton.contracts.serde import AvroSerde
from baton.workflows import load_workflows
from baton_demo.mesh import AUDIT_ANCHOR_FILE, AUDIT_VERIFY_KEY_FILE, drain_auditor, start_mesh, verify_embedded_audit

AUDIT_DB = "audit.db"
LEDGER_DB = "ledger.db"


@dataclass(frozen=True)
class LocalOutcome:
    """How one workflow ended: completed, halted or escalated, with the reason code and reason."""

    workflow_id: str
    kind: str
    reason_code: str = ""
    reason: str = ""

    def line(self) -> str:
        """One line for the terminal: `inv-1003  escalated  TOOL_PO_MISMATCH  <reason>`."""
        return "  ".join(p for p in (self.workflow_id, self.kind, self.reason_code, self.reason) if p)


@dataclass
class LocalRun:
    """What a local run did: every outcome, what is missing, what the bus and the audit say."""

    outcomes: dict[str, LocalOutcome]
    missing: list[str]
    dead_letters: list[str] = field(default_factory=list)
    duplicate_outcomes: list[str] = field(default_factory=list)
    audit_records: int = 0
    audit_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every task reached exactly one outcome, nothing was dead-lettered, and the audit verifies."""
        return not (self.missing or self.dead_letters or self.duplicate_outcomes or self.audit_problems)


def _outcome(event: WorkflowCompleted | WorkflowHalted | WorkflowEscalated) -> LocalOutcome:
    wf = event.envelope.workflow_id
    if isinstance(event, WorkflowCompleted):
        return LocalOutcome(wf, "completed")
    kind = "halted" if isinstance(event, WorkflowHalted) else "escalated"
    return LocalOutcome(wf, kind, event.reason_code, event.reason)


LOCAL_MARKER = ".baton-local"


class LocalStateError(Exception):
    """The state directory holds an audit or ledger `baton local` did not make."""


def _prepare(workflow_dir: Path, state_dir: Path) -> None:
    # The services read their declarations (and the agents their tools.yaml) from BATON_WORKFLOW_DIR.
    os.environ["BATON_WORKFLOW_DIR"] = str(workflow_dir.resolve())
    load_workflows.cache_clear()
    state_dir.mkdir(parents=True, exist_ok=True)
    # A fresh audit (chains of an earlier run would not verify) and a fresh ledger (the same tasks again would
    # replay the earlier run's steps instead of running them) — but only files an earlier `baton local` made:
    # the same names are the defaults of a real auditor's store and a real agent's ledger.
    stale = [*state_dir.glob("audit*"), *state_dir.glob(f"{LEDGER_DB}*")]
    marker = state_dir / LOCAL_MARKER
    if stale and not marker.exists():
        raise LocalStateError(
            f"{state_dir} holds {sorted(p.name for p in stale)} that `baton local` did not make (no {LOCAL_MARKER} "
            "there): it will not delete them; pass --state with a directory of its own"
        )
    for path in stale:
        path.unlink()
    marker.write_text("made by `baton local`: its audit and ledger here are replaced on every run\n")


async def run_local(
    *, workflow_dir: Path, tasks: Sequence[Task], state_dir: Path, timeout_s: float = 120.0
) -> LocalRun:
    """Run the tasks through every service on the embedded bus; the audit stays in state_dir."""
    _prepare(workflow_dir, state_dir)
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    mesh = await start_mesh(
        bus, workflow_dir=workflow_dir, audit_db=state_dir / AUDIT_DB, ledger_db=state_dir / LEDGER_DB
    )
    client = BatonClient(mesh.events("baton-local", role=identity.CLIENT), requested_by="baton-local")
    outcomes: dict[str, LocalOutcome] = {}
    ids = [await client.submit_task(task) for task in tasks]
    deadline = time.monotonic() + timeout_s
    try:
        async with asyncio.timeout(timeout_s), contextlib.aclosing(client.outcomes()) as stream:
            async for event in stream:
                outcomes.setdefault(event.envelope.workflow_id, _outcome(event))
                if set(ids) <= set(outcomes):
                    break
    except TimeoutError:
        pass
    public_key = await drain_auditor(mesh, bus, state_dir, deadline=deadline)
    await mesh.stop()
    run = LocalRun(outcomes=outcomes, missing=[wf for wf in ids if wf not in outcomes])
    await _tally(bus, mesh.serde, run)
    try:
        report = await verify_embedded_audit(bus, state_dir / AUDIT_DB, public_key)
    finally:
        await bus.stop()
    run.audit_records, run.audit_problems = report.records, report.problems
    return run


async def _tally(bus: EmbeddedBus, serde: AvroSerde, run: LocalRun) -> None:
    """Dead letters, and workflows with more than one outcome event, as they crossed the bus."""
    outcome_ids: dict[str, set[str]] = {}

    async def count(record: BusRecord) -> None:
        event = await serde.decode(record.value)
        if isinstance(event, DeadLettered):
            run.dead_letters.append(f"{event.source_topic}: {event.reason_code} ({event.consumer_group})")
        elif isinstance(event, WorkflowCompleted | WorkflowHalted | WorkflowEscalated):
            outcome_ids.setdefault(event.envelope.workflow_id, set()).add(event.envelope.event_id)

    await bus.replay([topics.OUTCOMES, topics.DEAD_LETTER], count)
    run.duplicate_outcomes = [f"{wf}: {len(ids)} outcomes" for wf, ids in outcome_ids.items() if len(ids) > 1]


def summary(run: LocalRun, state_dir: Path) -> list[str]:
    """What `baton local` prints after the outcomes: counts, then how to verify and trace the audit."""
    kinds = Counter(o.kind for o in run.outcomes.values())
    lines = [
        f"{len(run.outcomes)} workflows: "
        + ", ".join(f"{kinds.get(k, 0)} {k}" for k in ("completed", "halted", "escalated"))
        + f"; {len(run.missing)} without an outcome, {len(run.dead_letters)} dead letters, "
        f"{len(run.duplicate_outcomes)} duplicate outcomes",
        f"audit: {run.audit_records} records in {state_dir / AUDIT_DB}, "
        + ("every hash, chain link and signed anchor verified" if not run.audit_problems else "BROKEN"),
        *(f"  without an outcome: {wf}" for wf in run.missing),
        *(f"  dead letter: {d}" for d in run.dead_letters),
        *(f"  duplicate: {d}" for d in run.duplicate_outcomes),
        *(f"  audit: {p}" for p in run.audit_problems[:5]),
    ]
    env = "" if state_dir == Path(".baton") else f"BATON_AUDITOR_SQLITE_PATH={state_dir / AUDIT_DB} "
    keys = (
        f"BATON_AUDITOR_VERIFY_KEY_FILE={state_dir / AUDIT_VERIFY_KEY_FILE} "
        f"BATON_AUDITOR_ANCHOR_FILE={state_dir / AUDIT_ANCHOR_FILE} "
    )
    if run.outcomes:
        lines.append(f"lineage of a workflow: {env}baton audit trace {min(run.outcomes)}")
    lines.append(f"check the audit trail: {env}{keys}baton audit verify")
    return lines
