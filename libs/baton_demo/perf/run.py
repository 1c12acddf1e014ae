"""The whole bench: start FerretDB and a Kafka broker per figure on Kafka, measure every figure with its
baseline, write the report."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from baton.audit.mongo_store import MongoAuditStore
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.verify import verify_store
from baton.handoff import CheckpointView
from baton.testbed.ferretdb import start_ferretdb
from baton.testbed.kafka_broker import KafkaBroker, start_broker
from baton_demo.perf import kafka as on_kafka
from baton_demo.perf import local
from baton_demo.perf.profiling import profiled
from baton_demo.perf.report import BenchReport, write
from baton_demo.perf.stats import Comparison
from baton_demo.perf.workload import handoff


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does. The full sizes keep `make bench` under ~25 minutes on 2 cores."""

    reps: int
    signing_events: int
    validation_proposals: int
    validator_proposals: int
    e2e_workflows: int
    load_seconds: float
    demo_workflows: int
    cpu_workflows: int
    audit_workflows: int
    memory_marks: tuple[int, ...]


QUICK = Sizes(3, 500, 300, 500, 30, 6.0, 30, 10, 20, (500, 2_000))
# The soak drives a service's handlers ~6 ms per workflow on this machine: 100,000 workflows per service would
# take the bench past 45 minutes, so the full bench samples memory at 1,000 and 10,000 (`--memory-marks
# 10000,100000`, or `make soak`, for the marks).
FULL = Sizes(3, 5_000, 2_000, 5_000, 300, 30.0, 300, 100, 200, (1_000, 10_000))
LOADS = (0.25, 0.5, 0.75)


def _say(message: str) -> None:
    print(f"[bench {dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", flush=True)


async def _measure(report: BenchReport, sizes: Sizes, work: Path) -> None:
    from baton_demo.bench import signing_cost

    def add(cmp: Comparison) -> Comparison:
        report.comparisons.append(cmp)
        _say(
            f"{cmp.key}: Baton {cmp.baton.median:,.2f} {cmp.unit}, "
            f"baseline {cmp.baseline.median:,.2f}, {cmp.ratio:.3f}x"
        )
        return cmp

    ferret = start_ferretdb()
    report.machine.update(ferretdb=ferret.version)
    brokers: list[KafkaBroker] = []

    def fresh_broker(name: str) -> KafkaBroker:
        # Each figure on Kafka gets a broker of its own: Baton's topic names are fixed, and one figure's
        # records (20,000 verdicts of workflows the supervisor never ran) would be the next one's backlog.
        for old in brokers:
            old.stop()
        (work / name).mkdir()
        broker = start_broker(work / name)
        brokers.append(broker)
        report.machine.update(kafka=broker.version)
        return broker

    try:
        _say("signing cost (h)")
        for cmp in await signing_cost(events=sizes.signing_events, reps=sizes.reps):
            add(cmp)
        _say("in-process validation (f)")
        validation, _cold = [add(cmp) for cmp in await local.validation_cost(sizes.validation_proposals, sizes.reps)]
        if validation.baton.median > 60:
            handoffs = [handoff(i) for i in range(sizes.validation_proposals)]
            view = CheckpointView()
            for h in handoffs:
                view.update(h.checkpoint)
            verified = local.proven_checkpoints(handoffs)

            async def validate_all() -> None:
                for h in handoffs:
                    local.validate_once(h, view, verified)

            report.profiles["validation"] = await profiled(f"verify_handoff, {len(handoffs):,} proposals", validate_all)
        _say("embedded demo with and without the audit (c)")
        demo = add(await local.demo_with_and_without_audit(sizes.demo_workflows, sizes.reps, work / "demo"))
        _say("CPU seconds for 1x and 10x the workflows (g)")
        cpu, runs = await local.cpu_against_workflows(sizes.cpu_workflows, sizes.reps, work / "cpu")
        add(cpu)
        report.cpu_runs = [(r.workflows, r.cpu_s) for r in runs]
        if demo.baton.median < 5000 or cpu.ratio > 10.5:

            async def demo_run() -> None:
                await local.run_embedded(sizes.demo_workflows, audit=True, workdir=work / "demo-profile")

            report.profiles["demo"] = await profiled(
                f"embedded mesh with the audit, {sizes.demo_workflows:,} workflows", demo_run
            )
        _say("tracing and metrics on against off (i)")
        add(await local.telemetry_overhead(sizes.demo_workflows, sizes.reps, work / "telemetry"))
        add(await local.telemetry_overhead(sizes.demo_workflows, sizes.reps, work / "telemetry-10", sampled=0.1))
        _say("auditor into FerretDB against insert_many (d)")
        records = await local.audited_records(sizes.audit_workflows, work / "audited")
        auditor, _db = await local.auditor_against_insert_many(records, ferret.url, sizes.reps)
        add(auditor)
        if auditor.ratio < 0.8:

            async def audit_run() -> None:
                store = MongoAuditStore(ferret.url, database="bench_auditor_profile")
                await local.feed_auditor(store, records, batch=500)
                await store.close()

            report.profiles["auditor"] = await profiled(f"auditor into FerretDB, {len(records):,} events", audit_run)
        _say("baton audit verify against a bare scan (e)")
        verify, key = await local.verify_embedded(records, work / "verify", sizes.reps)
        add(verify)
        add(await local.verify_mongo(records, ferret.url, sizes.reps))
        if verify.baton.median < 100_000:
            path = work / "verify" / "verify-audit.db"

            async def verify_run() -> None:
                store = SqliteAuditStore(path, create=False)
                await verify_store(store, key)
                await store.close()

            report.profiles["verify"] = await profiled("baton audit verify, embedded store", verify_run)
        _say("handoff validator against the passthrough on Kafka (a)")
        trust = on_kafka.trust_domain()
        validator = await on_kafka.validator_against_passthrough(
            fresh_broker("kafka-validator"),
            work / "validator",
            sizes.validator_proposals,
            sizes.reps,
            trust=trust,
            profile_below=0.8,
        )
        add(validator.comparison)
        if validator.profile is not None:
            report.profiles["validator"] = validator.profile
        _say("end to end on Kafka against the embedded bus, and latency against load (b)")
        mesh = await on_kafka.mesh_on_kafka(
            fresh_broker("kafka-mesh"),
            work / "mesh",
            sizes.e2e_workflows,
            sizes.reps,
            trust=trust,
            loads=LOADS,
            load_seconds=sizes.load_seconds,
            profile_workflows=max(10, sizes.e2e_workflows // 3),
        )
        add(mesh.events)
        add(mesh.workflows)
        report.latency_curve = mesh.curve
        report.max_workflows_per_s = mesh.max_workflows_per_s
        if mesh.profile is not None:
            report.profiles["mesh"] = mesh.profile
    finally:
        for broker in brokers:
            broker.stop()
        ferret.stop()
    _say(f"resident memory per service at {', '.join(f'{m:,}' for m in sizes.memory_marks)} workflows (g)")
    report.memory = await asyncio.to_thread(local.memory_per_service, sizes.memory_marks)


def run_bench(
    out: Path, *, quick: bool, memory_marks: tuple[int, ...] = (), say: Callable[[str], None] = _say
) -> list[Path]:
    """Run every figure (quick: small sizes) and write the report into out; returns the files written."""
    sizes = QUICK if quick else FULL
    if memory_marks:
        sizes = dataclasses.replace(sizes, memory_marks=memory_marks)
    work = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    started = time.perf_counter()
    report = BenchReport(
        mode="quick" if quick else "full",
        started=f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        elapsed_s=0.0,
        parameters={k: v for k, v in sizes.__dict__.items() if k != "memory_marks"}
        | {
            "memory_marks": ", ".join(f"{m:,}" for m in sizes.memory_marks),
            "loads": ", ".join(f"{x:.0%}" for x in LOADS),
        },
        machine={"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    )
    try:
        asyncio.run(_measure(report, sizes, work))
    finally:
        report.elapsed_s = time.perf_counter() - started
    files = write(report, out)
    shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {', '.join(str(f) for f in files)} in {report.elapsed_s / 60:.1f} min")
    return files
