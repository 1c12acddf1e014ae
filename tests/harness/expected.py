"""What each workflow's outcome must be: the same submissions run on the embedded mesh, with no infrastructure
fault, in this process. The scripted model and the fault plan are deterministic per workflow, so a run on
Kafka with replicas killed, publishes failing or poison in the topics must end every workflow the same way."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baton import topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.contracts.models import Event, WorkflowCompleted, WorkflowEscalated, WorkflowHalted
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton_demo.faults import FaultPlan
from baton_demo.mesh import start_mesh
from baton_demo.world import World

OutcomeKey = tuple[str, str]


@dataclass(frozen=True)
class Submission:
    workflow_id: str
    workflow_type: str
    context: Mapping[str, Any]
    tenant_id: str


def outcome_key(event: Event) -> OutcomeKey | None:
    """(kind, reason code) of an outcome event; None for any other event."""
    if isinstance(event, WorkflowCompleted):
        return ("completed", "COMPLETED")
    if isinstance(event, WorkflowHalted):
        return ("halted", event.reason_code)
    if isinstance(event, WorkflowEscalated):
        return ("escalated", event.reason_code)
    return None


async def expected_outcomes(
    submissions: Sequence[Submission],
    *,
    plan: FaultPlan,
    world_seed: tuple[int, int],
    workdir: Path,
    approvals: bool = False,
) -> dict[str, OutcomeKey]:
    """Run the submissions on the embedded mesh and return each workflow's outcome (approvals: with the approval
    service and the scripted reviewers, as a run that deploys them; else approval-required ends escalated)."""
    os.makedirs(workdir, exist_ok=True)
    world = World(workdir / "world.db")
    world.seed(customers=world_seed[0], seed=world_seed[1])
    world.close()
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    mesh = await start_mesh(bus, world_db=workdir / "world.db", faults=plan, approvals=approvals)
    serde = AvroSerde(LocalSchemaRegistry())
    outcomes: dict[str, OutcomeKey] = {}
    done = asyncio.Event()

    async def observe(record: BusRecord) -> None:
        key = outcome_key(event := await serde.decode(record.value))
        if key is not None:
            outcomes.setdefault(event.envelope.workflow_id, key)
            if len(outcomes) >= len(submissions):
                done.set()

    await bus.subscribe([topics.OUTCOMES], group_id="expected.observer", handler=observe)
    client = BatonClient(mesh.events("expected-client"))
    for s in submissions:
        await client.submit(s.workflow_type, s.context, tenant_id=s.tenant_id, workflow_id=s.workflow_id)
    try:
        await asyncio.wait_for(done.wait(), 300)
    finally:
        await mesh.stop()
        await bus.stop()
    return outcomes
