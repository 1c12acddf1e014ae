"""Driving whole workflows through the mesh, embedded or on Kafka, and what one run of them measured."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from baton import identity, topics
from baton.bus.base import Bus
from baton.client import BatonClient
from baton.messaging import EventBus, EventConsumer
from baton.workflows import load_workflows
from baton_demo.demo import Observer, _inputs
from baton_demo.world import World, seeded_tenant

# What the observer watches: outcomes to know when a run is over, proposals and verdicts for handoff latency.
OBSERVED = [topics.HANDOFF_PROPOSALS, topics.HANDOFF_VERDICTS, topics.STEP_RESULTS, topics.OUTCOMES]


@dataclass
class MeshRun:
    """One run of workflows: how many events the services produced, in how long, and handoff latencies."""

    workflows: int
    outcomes: int
    events: int
    elapsed_s: float
    cpu_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s

    @property
    def workflows_per_s(self) -> float:
        return self.outcomes / self.elapsed_s


def seed_world(path: Path, workflows: int) -> World:
    """A world with a customer and a ticket for every workflow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    world = World(path)
    world.seed(customers=max(300, workflows), seed=7)
    return world


def submissions(world: World, workflows: int, prefix: str) -> list[tuple[str, str, dict[str, str], str]]:
    """(workflow id, type, input, tenant) for workflows alternating between the two declared types."""
    specs = load_workflows()
    kinds = sorted(specs)
    out = []
    for i in range(workflows):
        spec = specs[kinds[i % len(kinds)]]
        out.append((f"{prefix}-{i:06d}", spec.name, _inputs(spec, world, i), seeded_tenant(i)))
    return out


async def observe(events: EventBus, group: str) -> Observer:
    """An observer of outcomes and handoffs on the bus (reads each topic from its start)."""
    observer = Observer()
    await events.bus.subscribe(
        OBSERVED, group_id=None, handler=EventConsumer(events, group_id=group, handler=observer.on_event, traced=False)
    )
    return observer


async def drive(
    client: BatonClient,
    observer: Observer,
    work: list[tuple[str, str, dict[str, str], str]],
    *,
    rate_per_s: float | None = None,
    timeout_s: float,
) -> tuple[float, int, list[float]]:
    """Submit the workflows (all at once, or at a steady rate) and wait for their outcomes.

    Returns the seconds from the first submission to the last outcome, the outcomes seen and the handoff
    latencies observed meanwhile (proposal to verdict, both producers' clocks)."""
    ids = {wf for wf, *_ in work}
    first_latency = len(observer.latencies_ms)
    started = time.perf_counter()
    for n, (wf, kind, inputs, tenant) in enumerate(work):
        if rate_per_s is not None:
            due = started + n / rate_per_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await client.submit(kind, inputs, tenant_id=tenant, workflow_id=wf)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(1 for wf in ids if wf in observer.outcomes)
        if done == len(ids):
            break
        observer.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(observer.changed.wait(), timeout=1.0)
    elapsed = time.perf_counter() - started
    return elapsed, sum(1 for wf in ids if wf in observer.outcomes), observer.latencies_ms[first_latency:]


def client_on(bus: Bus, trust: identity.TrustDomain, name: str) -> tuple[BatonClient, EventBus]:
    """A client (and its event bus) signing as the client role."""
    from baton.contracts.registry import LocalSchemaRegistry
    from baton.contracts.serde import AvroSerde

    events = EventBus(
        bus=bus, serde=AvroSerde(LocalSchemaRegistry()), producer=name, trust=trust.trust(identity.CLIENT)
    )
    return BatonClient(events, requested_by=name), events
