"""Memory soak: drive one service's handlers through many complete workflows and sample its RSS.

`baton soak supervisor|handoff-validator --workflows 100000` runs the service's real handlers on a bus
that acknowledges and drops every publish (so the bus's own log does not count), and prints the
resident set size after each checkpoint count of completed workflows. Memory is bounded when the
figure stops growing with the number of workflows.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from baton import topics
from baton.bus.base import BusRecord, Handler, Headers, Subscription
from baton.context import diff_contexts, load_context, make_snapshot
from baton.contracts.models import (
    ContextSnapshot,
    Envelope,
    HandoffAccepted,
    HandoffProposed,
    StepCompleted,
    TaskRequested,
    WorkflowCheckpointed,
)
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.identity import TrustDomain, role_of_service
from baton.messaging import EventBus
from baton.workflows import END, load_workflows


class NullBus:
    """Acknowledges every publish and keeps nothing."""

    def __init__(self) -> None:
        self.published = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def create_topics(
        self, topics_: Sequence[str], *, partitions: int | None = None, compacted: bool = False
    ) -> None:
        return None

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        self.published += 1

    async def replay(
        self, topics_: Sequence[str], handler: Handler, *, partitions: Collection[int] | None = None
    ) -> int:
        return 0

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {}

    async def subscribe_batches(self, *args: Any, **options: Any) -> Subscription:
        raise NotImplementedError("the soak drives handlers directly")

    async def subscribe(self, *args: Any, **options: Any) -> Subscription:
        raise NotImplementedError("the soak drives handlers directly")


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass(frozen=True)
class Sample:
    workflows: int
    rss_mib: float
    held: int
    elapsed_s: float


def _context(i: int, step: int) -> dict[str, object]:
    return {"customer_id": f"cust-{i:07d}", "notes": "x" * 2000, **{f"step_{k}": {"ok": True} for k in range(step)}}


async def soak(
    service: str, *, workflows: int, report_at: Sequence[int], finished_capacity: int = 10_000
) -> list[Sample]:
    """Run `workflows` complete workflows through one service's handlers; sample RSS at each `report_at`."""
    role = role_of_service(service)
    events = EventBus(
        bus=NullBus(),
        serde=AvroSerde(LocalSchemaRegistry()),
        producer=f"soak-{service}",
        trust=TrustDomain.generate([role]).trust(role),
    )
    spec = load_workflows()["customer_onboarding"]
    agents = [a.name for a in spec.agents if not a.critical]
    record = BusRecord(topics.TASKS, 0, 0, None, b"")
    samples: list[Sample] = []
    started = time.perf_counter()
    if service == "supervisor":
        from baton.supervisor import Supervisor, proposal_event_id
        from services.supervisor.handlers import SupervisorHandlers

        sup = SupervisorHandlers(events, Supervisor(load_workflows(), finished_capacity=finished_capacity))

        async def one(i: int) -> None:
            wf = f"soak-{i:07d}"
            env = Envelope(workflow_id=wf, tenant_id="t", producer="soak")
            await sup.on_event(
                TaskRequested(
                    envelope=env, workflow_type=spec.name, input_json=json.dumps(_context(i, 0)), requested_by="soak"
                ),
                record,
            )
            for step, agent in enumerate(agents, start=1):
                await sup.on_event(StepCompleted(envelope=env, agent=agent, succeeded=True, tokens_used=50), record)
                cp = sup.supervisor.states[wf].checkpoint
                after = make_snapshot(_context(i, step), version=cp.version + 1, parent=cp)
                to = agents[step] if step < len(agents) else END
                accepted = HandoffAccepted(
                    envelope=env.model_copy(update={"causation_id": proposal_event_id(wf, agent, cp.version, 1)}),
                    from_agent=agent,
                    to_agent=to,
                    snapshot=after,
                    diff=diff_contexts(load_context(cp), load_context(after)),
                )
                await sup.on_event(accepted, record)

        def held() -> int:
            assert not sup.supervisor.states, "every soak workflow should have finished"
            return len(sup.supervisor.finished)

    elif service == "handoff-validator":
        from baton.handoff import CheckpointView
        from services.handoff_validator.handlers import HandoffValidatorHandlers

        val = HandoffValidatorHandlers(
            events,
            view=CheckpointView(),
            required_inputs={},
            workflows=load_workflows(),
            max_context_bytes=1_000_000,
            checkpoint_wait_s=1,
        )

        async def one(i: int) -> None:
            wf = f"soak-{i:07d}"
            env = Envelope(workflow_id=wf, tenant_id="t", producer="soak")
            cp: ContextSnapshot = make_snapshot(_context(i, 0), version=1)
            for step, agent in enumerate(agents, start=1):
                await val.on_checkpoint(
                    WorkflowCheckpointed(
                        envelope=env, workflow_type=spec.name, state="running", next_agent=agent, snapshot=cp
                    ),
                    record,
                )
                after = make_snapshot(_context(i, step), version=cp.version + 1, parent=cp)
                proposal = HandoffProposed(
                    envelope=env.model_copy(update={"event_id": f"{wf}-{step}"}),
                    from_agent=agent,
                    to_agent="x",
                    snapshot=after,
                )
                await val.on_proposal(proposal, record)
                cp = after
            await val.on_checkpoint(
                WorkflowCheckpointed(envelope=env, workflow_type=spec.name, state="completed", snapshot=cp), record
            )

        def held() -> int:
            return len(val.view)

    elif service == "auditor":
        import tempfile
        from pathlib import Path

        from baton.audit.keys import generate_signing_key
        from baton.audit.sqlite_store import SqliteAuditStore
        from services.auditor.handlers import AuditorHandlers

        store = SqliteAuditStore(Path(tempfile.mkdtemp(prefix="baton-soak-")) / "audit.db")
        await store.setup()
        auditor = AuditorHandlers(
            store, events.serde, signing_key=generate_signing_key(), anchor_every=10_000, auditor_id="soak"
        )
        offsets = [0, 0, 0, 0]

        async def one(i: int) -> None:
            wf = f"soak-{i:07d}"
            env = Envelope(workflow_id=wf, tenant_id="t", producer="soak")
            snap = make_snapshot(_context(i, 0), version=1)
            batch = []
            for event in (
                TaskRequested(envelope=env, workflow_type=spec.name, input_json="{}", requested_by="soak"),
                WorkflowCheckpointed(envelope=env, workflow_type=spec.name, state="running", snapshot=snap),
                WorkflowCheckpointed(envelope=env, workflow_type=spec.name, state="completed", snapshot=snap),
            ):
                p = i % 4
                value = await events.serde.encode(
                    event.model_copy(update={"envelope": env.model_copy(update={"event_id": f"{wf}-{offsets[p]}"})})
                )
                batch.append(BusRecord(topics.CHECKPOINTS, p, offsets[p], wf.encode(), value))
                offsets[p] += 1
            await auditor.on_batch(batch)

        def held() -> int:
            return len(auditor._recent) + len(auditor._chain.workflows)

    else:
        raise ValueError(f"no soak for {service!r}; choose supervisor, handoff-validator or auditor")

    marks = sorted(set(report_at))
    for i in range(1, workflows + 1):
        await one(i)
        if marks and i == marks[0]:
            marks.pop(0)
            gc.collect()
            samples.append(Sample(i, rss_mib(), held(), time.perf_counter() - started))
    return samples
