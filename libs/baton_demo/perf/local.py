"""Figures measured in this process (with FerretDB for the MongoDB-wire store): the embedded mesh with and
without the audit, CPU against workflows, the auditor against insert_many, verify against a bare scan,
in-process validation against hash-and-parse, and memory per service (make soak, in fresh processes)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from baton import identity
from baton.audit.anchors import StoreAnchorSink
from baton.audit.chain import Record
from baton.audit.keys import generate_signing_key
from baton.audit.mongo_store import MongoAuditStore
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.store import AuditStore
from baton.audit.verify import verify_store
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.context import parse_context
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.handoff import CheckpointView, HandoffVerdict, VerifiedContexts, verify_handoff
from baton.telemetry import metrics, tracing
from baton.workflows import WorkflowSpec, agent_kinds, load_workflows
from baton_demo.mesh import start_mesh
from baton_demo.perf.mesh import MeshRun, drive, observe, seed_world, submissions
from baton_demo.perf.stats import Comparison, alternate
from baton_demo.perf.workload import WORKFLOW, Handoff, handoff
from services.auditor.app import audited_topics
from services.auditor.handlers import AuditorHandlers


async def run_embedded(workflows: int, *, audit: bool, workdir: Path, prefix: str = "emb") -> MeshRun:
    """Every service in this process on the embedded bus: workflows submitted at once, until each has its
    outcome (and, with the audit, until the auditor has stored every event)."""
    world = seed_world(workdir / "world.db", workflows)
    work = submissions(world, workflows, prefix)
    world.close()
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    trust = identity.TrustDomain.generate(identity.all_roles(agent_kinds(load_workflows())))
    # Without the approval service, like the Kafka side: an action that needs a human ends escalated.
    mesh = await start_mesh(
        bus,
        world_db=workdir / "world.db",
        audit_db=workdir / "audit.db" if audit else None,
        trust=trust,
        approvals=False,
    )
    from baton.client import BatonClient

    observer = await observe(mesh.events("bench-observer", role=identity.CLIENT), "baton.bench.observer")
    client = BatonClient(mesh.events("bench-client", role=identity.CLIENT), requested_by="bench")
    cpu = time.process_time()
    started = time.perf_counter()
    _elapsed, outcomes, latencies = await drive(client, observer, work, timeout_s=600)
    if audit:
        auditor = mesh.apps["auditor"].handlers
        audited = audited_topics()
        while auditor.appended + auditor.skipped < bus.size(audited):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await auditor.anchor()
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    events = bus.size(audited_topics())
    await mesh.stop()
    await bus.stop()
    return MeshRun(workflows, outcomes, events, elapsed, cpu_s, latencies)


async def demo_with_and_without_audit(workflows: int, reps: int, workdir: Path) -> Comparison:
    """(c) The embedded demo's events/s with the auditor against the same mesh without it."""
    cmp = Comparison(
        "demo_audit",
        f"embedded demo, {workflows:,} workflows, with the audit (SQLite store)",
        "the same without the audit",
        "events/s",
        True,
    )

    async def side(rep: int, audit: bool) -> float:
        run = await run_embedded(workflows, audit=audit, workdir=workdir / f"demo-{audit}-{rep}")
        if run.outcomes != workflows:
            raise RuntimeError(f"embedded demo: {workflows - run.outcomes} workflows without an outcome")
        return run.events_per_s

    async def with_audit(rep: int) -> float:
        return await side(rep, True)

    async def without(rep: int) -> float:
        return await side(rep, False)

    return await alternate(cmp, reps, with_audit, without)


class EncodingExporter(SpanExporter):
    """Encodes every span as the OTLP exporter does (protobuf) and drops it: an export's CPU, without a network."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


async def telemetry_overhead(workflows: int, reps: int, workdir: Path, *, sampled: float = 1.0) -> Comparison:
    """(i) The embedded mesh with the audit, tracing (spans exported in batches, OTLP-encoded; sampled: the share of
    workflows traced, by the standard parent-based ratio sampler) and metrics on, against both off."""
    share = "every workflow traced" if sampled >= 1 else f"{sampled:.0%} of workflows traced"
    cmp = Comparison(
        "telemetry" if sampled >= 1 else "telemetry_sampled",
        f"embedded mesh, {workflows:,} workflows, with the audit, tracing ({share}) and metrics on",
        "the same with tracing and metrics off",
        "events/s",
        True,
    )

    async def side(rep: int, on: bool) -> float:
        metrics.switch(on)
        sampler = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(sampled)}
        saved = {name: os.environ.get(name) for name in sampler}
        try:
            if not on:
                run = await run_embedded(workflows, audit=True, workdir=workdir / f"off-{rep}")
            else:
                os.environ.update(sampler)
                exporter = EncodingExporter()
                with tracing.exporting_to(exporter, batch=True):
                    run = await run_embedded(workflows, audit=True, workdir=workdir / f"on-{rep}")
                if sampled >= 1 and exporter.spans < run.events:
                    raise RuntimeError(f"telemetry on: {exporter.spans} spans exported for {run.events} events")
        finally:
            metrics.switch(True)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        if run.outcomes != workflows:
            raise RuntimeError(
                f"telemetry {'on' if on else 'off'}: {workflows - run.outcomes} workflows without an outcome"
            )
        return run.events_per_s

    async def on(rep: int) -> float:
        return await side(rep, True)

    async def off(rep: int) -> float:
        return await side(rep, False)

    return await alternate(cmp, reps, on, off)


async def cpu_against_workflows(workflows: int, reps: int, workdir: Path) -> tuple[Comparison, list[MeshRun]]:
    """(g) CPU seconds of the whole embedded mesh with the audit for 10x the workflows against 1x."""
    cmp = Comparison(
        "cpu_10x",
        f"CPU seconds, {workflows * 10:,} workflows (embedded mesh with the audit)",
        f"CPU seconds, {workflows:,} workflows",
        "CPU s",
        False,
    )
    runs: list[MeshRun] = []

    async def tenfold(rep: int) -> float:
        run = await run_embedded(workflows * 10, audit=True, workdir=workdir / f"cpu10-{rep}")
        runs.append(run)
        return run.cpu_s

    async def onefold(rep: int) -> float:
        run = await run_embedded(workflows, audit=True, workdir=workdir / f"cpu1-{rep}")
        runs.append(run)
        return run.cpu_s

    return await alternate(cmp, reps, tenfold, onefold), runs


@functools.cache
def _workflow() -> WorkflowSpec:
    """The bench's workflow declaration, read once (as the validator service does at start), not per proposal."""
    return load_workflows()[WORKFLOW]


def validate_once(h: Handoff, view: CheckpointView, verified: VerifiedContexts | None = None) -> HandoffVerdict:
    """The validator's in-process check of one proposal (the one call the bench makes per proposal)."""
    spec = _workflow()
    facts = view.facts(h.proposal.envelope.workflow_id)
    return verify_handoff(
        h.proposal,
        checkpoint=facts,
        workflow=spec,
        required_inputs=spec.agents[1].inputs,
        verified=verified,
    )


def proven_checkpoints(handoffs: Sequence[Handoff]) -> VerifiedContexts:
    """What the validator service holds when these proposals arrive: each parent checkpoint's context is one
    it accepted (proved canonical) just before, as for every handoff but a workflow's first."""
    verified = VerifiedContexts(max_text_bytes=4 * sum(len(h.checkpoint.snapshot.context_json) for h in handoffs))
    for h in handoffs:
        snapshot = h.checkpoint.snapshot
        verified.remember(snapshot, parse_context(snapshot.context_json))
    return verified


async def validation_cost(n: int, reps: int) -> list[Comparison]:
    """(f) Microseconds per 2 KB proposal against hashing the received bytes and one parse: as the validator
    service runs it (its parent checkpoint proven before), and cold (a workflow's first handoff)."""
    handoffs = [handoff(i) for i in range(n)]
    view = CheckpointView(capacity=n + 1)
    for h in handoffs:
        view.update(h.checkpoint)
    verdict = validate_once(handoffs[0], view)
    if not verdict.accepted:
        raise RuntimeError(f"the bench's proposal should be accepted: {verdict.code} {verdict.reason}")
    received = [h.proposal.snapshot.context_json.encode() for h in handoffs]

    async def baseline(_rep: int) -> float:
        started = time.perf_counter()
        for raw in received:
            hashlib.sha256(raw).hexdigest()
            json.loads(raw)
        return (time.perf_counter() - started) / n * 1e6

    figures: list[Comparison] = []
    for key, what, warm in (
        (
            "validation",
            "in-process validation of a 2 KB proposal (verify_handoff, parent checkpoint proven before)",
            True,
        ),
        ("validation_cold", "the same, cold: a workflow's first handoff (parent checkpoint parsed and proven)", False),
    ):
        cmp = Comparison(key, what, "SHA-256 of the received context bytes, then one json.loads", "µs", False)

        async def baton(_rep: int, warm: bool = warm) -> float:
            verified = proven_checkpoints(handoffs) if warm else None  # filled before the clock starts
            started = time.perf_counter()
            for h in handoffs:
                validate_once(h, view, verified)
            return (time.perf_counter() - started) / n * 1e6

        figures.append(await alternate(cmp, reps, baton, baseline))
    return figures


async def audited_records(workflows: int, workdir: Path) -> list[BusRecord]:
    """Every record a run of the embedded mesh produced on the audited topics, in partition order."""
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    world = seed_world(workdir / "world.db", workflows)
    work = submissions(world, workflows, "aud")
    world.close()
    mesh = await start_mesh(bus, world_db=workdir / "world.db")
    from baton.client import BatonClient

    observer = await observe(mesh.events("bench-observer", role=identity.CLIENT), "baton.bench.observer")
    client = BatonClient(mesh.events("bench-client", role=identity.CLIENT), requested_by="bench")
    await drive(client, observer, work, timeout_s=600)
    await mesh.stop()
    await bus.stop()
    records: list[BusRecord] = []
    await bus.replay(audited_topics(), _collect(records))
    return records


def _collect(into: list[BusRecord]) -> Any:
    async def handler(record: BusRecord) -> None:
        into.append(record)

    return handler


async def feed_auditor(store: AuditStore, records: Sequence[BusRecord], *, batch: int) -> AuditorHandlers:
    """The auditor's handlers appending the records in consumer-sized batches, then anchoring: the one call
    the bench makes of the auditor (switch it to the auditor's own entry point once it has one)."""
    await store.setup()
    auditor = AuditorHandlers(
        store,
        AvroSerde(LocalSchemaRegistry()),
        signing_key=generate_signing_key(),
        anchor_every=10_000,
        auditor_id="bench",
        sinks=[StoreAnchorSink(store)],  # the service also publishes them to the bus and a file
    )
    for start in range(0, len(records), batch):
        await auditor.on_batch(records[start : start + batch])
    await auditor.anchor()
    return auditor


async def auditor_against_insert_many(
    records: Sequence[BusRecord], mongo_url: str, reps: int, *, batch: int = 500
) -> tuple[Comparison, str]:
    """(d) The auditor into the MongoDB-wire server against bare insert_many of the documents it stores,
    in the same batches, into a collection with the same indexes. Returns the comparison and the database
    of the last Baton run (for the verify figure)."""
    from pymongo import AsyncMongoClient

    prep = MongoAuditStore(mongo_url, database="bench_prep")
    await feed_auditor(prep, records, batch=batch)
    documents = [doc async for doc in prep.records.find({}, sort=[("_id", 1)])]
    await prep.close()
    n = len(documents)
    cmp = Comparison(
        "auditor",
        f"auditor into FerretDB, {n:,} events of a mesh run, batches of {batch}",
        "bare insert_many of the same documents, same batches and indexes",
        "records/s",
        True,
    )
    last = {"db": ""}

    async def baton(rep: int) -> float:
        name = f"bench_auditor_{rep}"
        store = MongoAuditStore(mongo_url, database=name)
        started = time.perf_counter()
        auditor = await feed_auditor(store, records, batch=batch)
        elapsed = time.perf_counter() - started
        await store.close()
        last["db"] = name
        return auditor.appended / elapsed

    async def baseline(rep: int) -> float:
        client: AsyncMongoClient[Record] = AsyncMongoClient(mongo_url)
        shape = MongoAuditStore(mongo_url, database=f"bench_insert_{rep}", client=client)
        await shape.setup()  # the same indexes the store keeps
        started = time.perf_counter()
        for start in range(0, n, batch):
            await shape.records.insert_many([dict(d) for d in documents[start : start + batch]], ordered=True)
        elapsed = time.perf_counter() - started
        await client.close()
        return n / elapsed

    await alternate(cmp, reps, baton, baseline)
    return cmp, last["db"]


async def verify_against_scan(store_of: Any, bare_scan: Any, public_key: Any, reps: int, cmp: Comparison) -> Comparison:
    """(e) `baton audit verify`'s check of a store (records/s) against a bare scan of the same store."""

    async def baton(_rep: int) -> float:
        store = store_of()
        started = time.perf_counter()
        report = await verify_store(store, public_key)
        elapsed = time.perf_counter() - started
        await store.close()
        if report.problems:
            raise RuntimeError(f"the bench's audit store does not verify: {report.problems[:3]}")
        return report.records / elapsed

    async def baseline(_rep: int) -> float:
        started = time.perf_counter()
        n: int = await bare_scan()
        return n / (time.perf_counter() - started)

    return await alternate(cmp, reps, baton, baseline)


async def verify_embedded(records: Sequence[BusRecord], workdir: Path, reps: int) -> tuple[Comparison, Any]:
    """(e) verify on the embedded SQLite store the auditor filled with the records, against a bare scan
    (returns the comparison and the key its anchors verify with)."""
    path = workdir / "verify-audit.db"
    store = SqliteAuditStore(path)
    auditor = await feed_auditor(store, records, batch=500)
    await store.close()

    async def scan() -> int:
        def read() -> int:
            db = sqlite3.connect(path)
            n = 0
            for (doc,) in db.execute("SELECT doc FROM audit_records"):
                json.loads(doc)
                n += 1
            db.close()
            return n

        return await asyncio.to_thread(read)

    cmp = Comparison(
        "verify_sqlite",
        f"baton audit verify, embedded SQLite store, {auditor.appended:,} records",
        "bare scan of the same store (every row read and parsed once)",
        "records/s",
        True,
    )
    store_of = lambda: SqliteAuditStore(path, create=False)  # noqa: E731
    return await verify_against_scan(store_of, scan, auditor.public_key, reps, cmp), auditor.public_key


async def verify_mongo(records: Sequence[BusRecord], mongo_url: str, reps: int) -> Comparison:
    """(e) verify on the MongoDB-wire server against a bare scan of the same collection."""
    from pymongo import AsyncMongoClient

    store = MongoAuditStore(mongo_url, database="bench_verify")
    auditor = await feed_auditor(store, records, batch=500)
    await store.close()

    async def scan() -> int:
        client: AsyncMongoClient[Record] = AsyncMongoClient(mongo_url)
        n = 0
        async for _doc in client["bench_verify"]["audit_records"].find({}):
            n += 1
        await client.close()
        return n

    cmp = Comparison(
        "verify_mongo",
        f"baton audit verify, FerretDB, {auditor.appended:,} records",
        "bare scan of the same collection (find, every document)",
        "records/s",
        True,
    )
    return await verify_against_scan(
        lambda: MongoAuditStore(mongo_url, database="bench_verify"), scan, auditor.public_key, reps, cmp
    )


_SOAK_LINE = re.compile(r"^(?P<service>[\w-]+): (?P<workflows>\d+) workflows: RSS (?P<rss>[\d.]+) MiB")


def memory_per_service(marks: Sequence[int]) -> list[dict[str, Any]]:
    """(g) Resident memory of each service's handlers at each mark of completed workflows (`baton soak`, each
    service in a fresh process so nothing of the bench counts).

    The auditor's soak store goes to /dev/shm when there is one: its synchronous commits would make the
    100,000 workflows take ~20 minutes on disk, and where the file lives does not change the RSS."""
    env = dict(os.environ)
    if Path("/dev/shm").is_dir():
        env["TMPDIR"] = "/dev/shm"
    rows: list[dict[str, Any]] = []
    for service in ("supervisor", "handoff-validator", "auditor"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "baton",
                "soak",
                service,
                "--workflows",
                str(max(marks)),
                "--report-at",
                ",".join(str(m) for m in marks),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        for line in out.splitlines():
            m = _SOAK_LINE.match(line)
            if m:
                rows.append({"service": service, "workflows": int(m["workflows"]), "rss_mib": float(m["rss"])})
    return rows


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="baton-bench-"))
