"""Figures on the real broker: the validator against a bare passthrough, and the whole mesh as processes
against the same workflows on the embedded bus, with handoff latency against offered load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from baton import identity, topics
from baton.bus.base import Headers
from baton.bus.kafka import KafkaBus
from baton.contracts.models import Event
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus
from baton.testbed.kafka_broker import KafkaBroker
from baton.testbed.processes import ServiceProcesses
from baton.workflows import agent_kinds, load_workflows
from baton_demo.perf.local import run_embedded
from baton_demo.perf.mesh import MeshRun, client_on, drive, observe, seed_world, submissions
from baton_demo.perf.profiling import Profile, profiled
from baton_demo.perf.stats import Comparison, LoadPoint, alternate, percentile
from baton_demo.perf.workload import handoff
from baton_demo.soak import NullBus
from services.auditor.app import audited_topics

PASSTHROUGH_OUT = "bench.passthrough.out"
PASSTHROUGH_GROUP = "bench.passthrough"


class RecordingBus(NullBus):
    """Keeps what an EventBus publishes (signed, encoded) so the bench can load it into Kafka in bulk."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, bytes, bytes | None, Headers]] = []

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        self.records.append((topic, value, key, headers))


async def signed(role: str, trust: identity.TrustDomain, events: Sequence[tuple[str, Event]]) -> RecordingBus:
    """The events as role publishes them: encoded and signed, not yet sent."""
    recording = RecordingBus()
    bus = EventBus(bus=recording, serde=AvroSerde(LocalSchemaRegistry()), producer="bench", trust=trust.trust(role))
    for topic, event in events:
        await bus.publish(topic, event)
    return recording


async def load(bootstrap: str, records: Sequence[tuple[str, bytes, bytes | None, Headers]]) -> None:
    """Write records to Kafka as fast as a batching producer can (this is setup, not measured)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        acks = [
            await producer.send(topic, value, key=key, headers=list(headers)) for topic, value, key, headers in records
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def total(bus: KafkaBus, names: Sequence[str]) -> int:
    """Records the topics hold (sum of end offsets)."""
    return sum([sum((await bus.end_offsets(t)).values()) for t in names])


async def rate_of_arrivals(bus: KafkaBus, topic: str, start: int, n: int, *, timeout_s: float) -> float:
    """Records per second arriving on topic, from the first new record seen to the n-th (polled every 5 ms):
    process start-up and group join are not counted, for either side."""
    deadline = time.monotonic() + timeout_s
    first: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        now = await total(bus, [topic]) - start
        if now > 0 and first is None:
            first = (time.perf_counter(), now)
        if now >= n and first is not None:
            elapsed = time.perf_counter() - first[0]
            return (now - first[1]) / elapsed if elapsed > 0 else float("nan")
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{topic}: {await total(bus, [topic]) - start} of {n} records within {timeout_s}s")


def _env(broker: KafkaBroker, keys: Path, world: Path | None = None) -> dict[str, str]:
    env = {
        "BATON_BUS": "kafka",
        "BATON_KAFKA_BOOTSTRAP": broker.bootstrap,
        "BATON_KEYS_DIR": str(keys),
        "BATON_LOG_LEVEL": "WARNING",
        # No approval service (nor reviewers) in the bench: an action that needs a human ends escalated, as on the
        # embedded side (run_embedded), instead of waiting for nobody.
        "BATON_SUPERVISOR_AWAIT_APPROVALS": "false",
    }
    if world is None:
        env["BATON_HANDOFF_VALIDATOR_WITHOUT_TOOL_RECEIPTS"] = "true"
    else:
        env["BATON_WORLD_DB"] = str(world)
        env["BATON_AGENT_LEDGER_DB"] = str(world.with_name("ledger.db"))
        env["BATON_HANDOFF_VALIDATOR_LEDGER_DB"] = str(world.with_name("ledger.db"))
        env["BATON_POLICY_GUARD_SPEND_SQLITE_PATH"] = str(world.with_name("spend.db"))
        env["BATON_SUPERVISOR_SPEND_SQLITE_PATH"] = str(world.with_name("spend.db"))
    return env


@dataclass
class ValidatorFigure:
    comparison: Comparison
    profile: Profile | None = None


def trust_domain() -> identity.TrustDomain:
    """One set of keys for every figure on the broker: the checkpoints one figure leaves in the compacted
    topic must verify for the services of the next."""
    return identity.TrustDomain.generate(identity.all_roles(agent_kinds(load_workflows())))


async def validator_against_passthrough(
    broker: KafkaBroker,
    workdir: Path,
    n: int,
    reps: int,
    *,
    trust: identity.TrustDomain,
    profile_below: float,
) -> ValidatorFigure:
    """(a) The validator service (a process) judging n proposals with 2 KB contexts against the passthrough
    copying the same n records, same broker, same partitions."""
    keys = workdir / "keys-validator"
    trust.write(keys)
    bus = KafkaBus(broker.bootstrap, client_id="bench")
    await bus.start()
    await bus.create_topics([topics.HANDOFF_PROPOSALS, topics.HANDOFF_VERDICTS, topics.DEAD_LETTER, PASSTHROUGH_OUT])
    await bus.create_topics([topics.CHECKPOINTS], compacted=True)
    handoffs = [handoff(i, prefix="val") for i in range(n)]
    checkpoints = await signed(identity.SUPERVISOR, trust, [(topics.CHECKPOINTS, h.checkpoint) for h in handoffs])
    agent = identity.agent_role(handoffs[0].proposal.from_agent)
    proposals = await signed(agent, trust, [(topics.HANDOFF_PROPOSALS, h.proposal) for h in handoffs])
    await load(broker.bootstrap, checkpoints.records)
    procs = ServiceProcesses(env=_env(broker, keys), logdir=workdir)
    cmp = Comparison(
        "validator",
        f"handoff validator service (a process), {n:,} proposals with 2 KB contexts",
        "bare aiokafka consume->produce passthrough, batched acks, same records",
        "records/s",
        True,
    )
    # Each repetition writes the n proposals again; both sides' groups then read exactly those.
    loaded = {"rep": -1}

    async def fresh(rep: int) -> None:
        if loaded["rep"] != rep:
            await load(broker.bootstrap, proposals.records)
            loaded["rep"] = rep

    async def side(rep: int, name: str, args: list[str], out: str) -> float:
        await fresh(rep)
        start = await total(bus, [out])
        dead = await total(bus, [topics.DEAD_LETTER])
        procs.spawn(name, *args)
        try:
            rate = await rate_of_arrivals(bus, out, start, n, timeout_s=max(120.0, n / 20))
        finally:
            procs.stop_all()
        if await total(bus, [topics.DEAD_LETTER]) != dead:
            raise RuntimeError(f"{name} dead-lettered bench records; see {workdir / (name + '.log')}")
        return rate

    async def baton(rep: int) -> float:
        return await side(
            rep, "handoff-validator", ["-m", "baton", "run", "handoff-validator"], topics.HANDOFF_VERDICTS
        )

    async def baseline(rep: int) -> float:
        args = ["-m", "baton_demo.perf.passthrough", broker.bootstrap, topics.HANDOFF_PROPOSALS, PASSTHROUGH_OUT]
        return await side(rep, "passthrough", [*args, PASSTHROUGH_GROUP], PASSTHROUGH_OUT)

    try:
        await alternate(cmp, reps, baton, baseline)
        figure = ValidatorFigure(cmp)
        if cmp.ratio < profile_below:
            figure.profile = await _profile_validator(bus, broker, proposals.records, trust, n)
    finally:
        await bus.stop()
    return figure


async def _profile_validator(
    bus: KafkaBus, broker: KafkaBroker, records: Sequence[tuple[str, bytes, bytes | None, Headers]], trust: Any, n: int
) -> Profile:
    """The validator's handlers in this process under cProfile, judging n more proposals on the broker."""
    from baton.runtime import RuntimeSettings
    from services.handoff_validator import app as validator_app
    from services.handoff_validator.config import Settings

    await load(broker.bootstrap, records)
    events = EventBus(
        bus=bus,
        serde=AvroSerde(LocalSchemaRegistry()),
        producer="bench-validator",
        trust=trust.trust(identity.HANDOFF_VALIDATOR),
    )
    start = await total(bus, [topics.HANDOFF_VERDICTS])

    async def judge() -> None:
        app = await validator_app.start(events, Settings(runtime=RuntimeSettings(bus="embedded")))
        try:
            deadline = time.monotonic() + max(120.0, n / 20)
            while await total(bus, [topics.HANDOFF_VERDICTS]) - start < n and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            await app.stop()

    return await profiled(f"handoff validator in-process on Kafka, {n:,} proposals", judge)


@dataclass
class MeshFigure:
    events: Comparison
    workflows: Comparison
    max_workflows_per_s: float
    half_load: LoadPoint | None
    curve: list[LoadPoint] = field(default_factory=list)
    profile: Profile | None = None


def _point(offered: float, run: MeshRun) -> LoadPoint:
    lat = run.latencies_ms
    return LoadPoint(
        offered,
        run.workflows_per_s,
        run.workflows,
        percentile(lat, 50),
        percentile(lat, 99),
        max(lat) if lat else float("nan"),
    )


async def mesh_on_kafka(
    broker: KafkaBroker,
    workdir: Path,
    n: int,
    reps: int,
    *,
    trust: identity.TrustDomain,
    loads: Sequence[float],
    load_seconds: float,
    profile_workflows: int,
) -> MeshFigure:
    """(b) n workflows through every service as its own process on Kafka against the same n in one process on
    the embedded bus; then the latency a handoff adds at fractions of the maximum load, offered steadily."""
    specs = load_workflows()
    keys = workdir / "keys-mesh"
    trust.write(keys)
    capacity = n * reps + int(sum(loads) * 1000 * load_seconds) + profile_workflows + 1000
    world = seed_world(workdir / "world.db", capacity)
    bus = KafkaBus(broker.bootstrap, client_id="bench-mesh")
    await bus.start()
    await bus.create_topics(
        [
            topics.TASKS,
            topics.OUTCOMES,
            topics.STEP_RESULTS,
            topics.HANDOFF_PROPOSALS,
            topics.HANDOFF_VERDICTS,
            topics.DECISIONS,
            topics.DEAD_LETTER,
            *(topics.agent_steps(k) for k in agent_kinds(specs)),
        ]
    )
    await bus.create_topics([topics.CHECKPOINTS], compacted=True)
    procs = ServiceProcesses(env=_env(broker, keys, workdir / "world.db"), logdir=workdir)
    procs.start("supervisor", "supervisor")
    procs.start("handoff-validator", "handoff-validator")
    procs.start("policy-guard", "policy-guard")
    for kind in agent_kinds(specs):
        procs.spawn(f"agent-{kind}", "-m", "baton_demo.agent", "--kind", kind)
    client, events = client_on(bus, trust, "bench-client")
    observer = await observe(events, "baton.bench.observer")
    audited = audited_topics()
    used = {"next": 0}

    def work(count: int, prefix: str) -> list[tuple[str, str, dict[str, str], str]]:
        start = used["next"]
        used["next"] += count
        return [
            (wf, kind, inputs, tenant) for wf, kind, inputs, tenant in submissions(world, start + count, prefix)[start:]
        ]

    kafka_runs: list[MeshRun] = []

    async def on_kafka(count: int, prefix: str, rate: float | None = None) -> MeshRun:
        before = await total(bus, audited)
        elapsed, outcomes, latencies = await drive(
            client, observer, work(count, prefix), rate_per_s=rate, timeout_s=max(300.0, count)
        )
        if dead := procs.dead():
            raise RuntimeError(f"service processes died: {dead}")
        events_ = await total(bus, audited) - before
        return MeshRun(count, outcomes, events_, elapsed, 0.0, latencies)

    try:
        # Warm up: processes joined their groups and the first handoff went through before timing.
        await on_kafka(4, "warm")
        ev = Comparison(
            "e2e_events",
            f"end to end on Kafka, {n:,} workflows, every service a process",
            "the same workflows on the embedded bus in one process",
            "events/s",
            True,
        )
        wf = Comparison(
            "e2e_workflows",
            f"end to end on Kafka, {n:,} workflows (workflows/s)",
            "the same on the embedded bus in one process",
            "workflows/s",
            True,
        )
        embedded_runs: list[MeshRun] = []

        async def kafka_side(rep: int) -> float:
            run = await on_kafka(n, f"k{rep}")
            if run.outcomes != n:
                raise RuntimeError(f"Kafka mesh: {n - run.outcomes} of {n} workflows without an outcome")
            kafka_runs.append(run)
            return run.events_per_s

        async def embedded_side(rep: int) -> float:
            run = await run_embedded(n, audit=False, workdir=workdir / f"embedded-{rep}")
            embedded_runs.append(run)
            return run.events_per_s

        await alternate(ev, reps, kafka_side, embedded_side)
        wf.baton.samples = [r.workflows_per_s for r in kafka_runs]
        wf.baseline.samples = [r.workflows_per_s for r in embedded_runs]
        top = wf.baton.median
        curve = [_point(top, _merge(kafka_runs))]
        for fraction in sorted(loads):
            rate = top * fraction
            count = max(10, int(rate * load_seconds))
            run = await on_kafka(count, f"load{int(fraction * 100)}", rate=rate)
            curve.append(_point(rate, run))
        half = next((p for p in curve if abs(p.offered_per_s - top * 0.5) < 1e-9), None)
        figure = MeshFigure(ev, wf, top, half, sorted(curve, key=lambda p: p.offered_per_s))
        procs.stop_all()
        if profile_workflows and (ev.baton.median < 5000 or half is None or half.p99_ms > 10):
            figure.profile = await _profile_mesh(bus, client, observer, trust, workdir, work(profile_workflows, "prof"))
        return figure
    finally:
        procs.stop_all()
        await bus.stop()


def _merge(runs: Sequence[MeshRun]) -> MeshRun:
    elapsed = sum(r.elapsed_s for r in runs)
    return MeshRun(
        sum(r.workflows for r in runs),
        sum(r.outcomes for r in runs),
        sum(r.events for r in runs),
        elapsed,
        0.0,
        [x for r in runs for x in r.latencies_ms],
    )


async def _profile_mesh(
    bus: KafkaBus, client: Any, observer: Any, trust: identity.TrustDomain, workdir: Path, work: Any
) -> Profile:
    """Every service in this process on the broker under cProfile (the processes are stopped by now)."""
    from baton_demo.mesh import start_mesh

    async def run() -> None:
        mesh = await start_mesh(bus, world_db=workdir / "world.db", trust=trust)
        try:
            await drive(client, observer, work, timeout_s=600)
        finally:
            await mesh.stop()

    return await profiled(f"the mesh's services in one process on Kafka, {len(work):,} workflows", run)
