"""The one CLI: `baton run SERVICE`, `baton schemas check`, and friends."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from baton.approvals.cli import approvals_app

if TYPE_CHECKING:
    from baton.bus.base import Bus
    from baton.messaging import EventBus

app = typer.Typer(help="Baton: a Kafka-native runtime for multi-agent workflows.", no_args_is_help=True)
schemas_app = typer.Typer(help="Avro contracts.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")
audit_app = typer.Typer(help="The tamper-evident audit trail (store chosen by BATON_AUDITOR_*).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(help="Identities: Ed25519 signing keys per role and the public keyring.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
dev_app = typer.Typer(help="Local infrastructure for development (from a checkout).", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
tools_app = typer.Typer(
    help="Tools: the registry, and the check of workflow declarations against it.", no_args_is_help=True
)
app.add_typer(tools_app, name="tools")
app.add_typer(approvals_app, name="approvals")

# service name -> module holding `Settings`, `start(events, settings)` and `SERVICE`
SERVICES: dict[str, str] = {
    "supervisor": "services.supervisor",
    "handoff-validator": "services.handoff_validator",
    "agent": "services.agent",
    "auditor": "services.auditor",
    "policy-guard": "services.policy_guard",
    "approvals": "services.approvals",
}


@audit_app.command("verify")
def audit_verify(
    against_kafka: Annotated[
        bool,
        typer.Option(
            "--against-kafka",
            help="prove completeness from the broker (BATON_KAFKA_BOOTSTRAP): every record below the auditor's "
            "committed offsets is stored once, unchanged, and covered by a signed anchor from the anchors topic",
        ),
    ] = False,
    anchor_file: Annotated[
        Path | None, typer.Option(help="anchors to trust from this file (default BATON_AUDITOR_ANCHOR_FILE)")
    ] = None,
) -> None:
    """Check every hash, chain link, offset and signed anchor; exit 1 naming what is missing or wrong."""
    from baton.audit.completeness import KafkaAuditedLog, verify_audit
    from baton.audit.keys import AuditKeyError
    from baton.audit.sqlite_store import SqliteAuditStore
    from baton.audit.store import AuditStore, StoreNotFoundError
    from baton.bus.kafka import KafkaBus
    from services.auditor.app import audited_topics
    from services.auditor.config import Settings

    settings = Settings()
    try:
        public_key = settings.public_key()
    except AuditKeyError as exc:
        typer.echo(f"audit verify: {exc}", err=True)
        raise typer.Exit(2) from exc
    where = settings.sqlite_path if settings.store == "embedded" else settings.mongodb_url + settings.mongodb_database
    no_store = f"audit FAILED: no audit store at {where} (BATON_AUDITOR_STORE={settings.store}): nothing to verify"

    async def go(scratch: Path) -> int:
        found: AuditStore | None = None
        try:
            found = settings.build_store(create=False)
            missing = None if await found.exists() else no_store
        except StoreNotFoundError as exc:
            missing = f"{no_store} ({exc})"
        if missing is None and found is not None:
            store = found
        else:
            if found is not None:
                await found.close()
            if not against_kafka:
                typer.echo(f"{missing}; nothing was created", err=True)
                return 1
            # The broker still holds the log: name what the audit lacks, against an empty scratch store.
            typer.echo(f"{missing}; nothing was created there; checking the broker's log against nothing", err=True)
            store = SqliteAuditStore(scratch / "empty.db")
            await store.setup()
        bus = KafkaBus(settings.runtime.kafka_bootstrap, client_id="baton-audit-verify") if against_kafka else None
        try:
            if bus is not None:
                await bus.start()
            report, sources = await verify_audit(
                store,
                public_key,
                anchor_bus=bus,
                anchor_file=anchor_file or settings.anchor_file,
                log=None if bus is None else KafkaAuditedLog(bus, settings.runtime.kafka_bootstrap),
                audited=audited_topics(),
            )
        finally:
            if bus is not None:
                await bus.stop()
            await store.close()
        summary = (
            f"{report.records} records in {report.partitions} partitions, {report.workflows} workflows, "
            f"{report.anchors} signed anchors from {' and '.join(sources)}"
        )
        if against_kafka:
            summary += f"; {report.log_records} records in the log below the auditor's committed offsets"
        if report.ok:
            checked = "every hash, chain link, offset and anchor verified"
            if against_kafka:
                checked += "; every record of the log is stored once and covered by a signed anchor"
            typer.echo(f"audit OK: {summary}; {checked}")
            return 0
        typer.echo(f"audit FAILED: {summary}", err=True)
        typer.echo(f"first problem: {report.problems[0]}", err=True)
        for problem in report.problems[1:10]:
            typer.echo(f"  also: {problem}", err=True)
        return 1

    with tempfile.TemporaryDirectory(prefix="baton-audit-verify-") as scratch:
        raise typer.Exit(asyncio.run(go(Path(scratch))))


@audit_app.command("keygen")
def audit_keygen(
    out: Annotated[Path, typer.Option(help="directory to write the key pair to")] = Path(".baton/keys"),
) -> None:
    """Write an Ed25519 key pair: auditor-signing.key (private, 0600) and auditor-verify.pub (for verifiers)."""
    import os

    from baton.audit.keys import encode_public_key, encode_signing_key, generate_signing_key, key_id

    private, public = out / "auditor-signing.key", out / "auditor-verify.pub"
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing:
        typer.echo(f"refusing to overwrite {', '.join(existing)}: move it away or choose another --out", err=True)
        raise typer.Exit(1)
    key = generate_signing_key()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(encode_signing_key(key) + "\n")
    public.write_text(encode_public_key(key.public_key()) + "\n")
    typer.echo(f"key {key_id(key.public_key())}: private key {private}, public key {public}")
    typer.echo(f"auditor:   BATON_AUDITOR_SIGNING_KEY_FILE={private}  (keep it secret: a mounted secret)")
    typer.echo(f"verifiers: BATON_AUDITOR_VERIFY_KEY_FILE={public}")


@audit_app.command("trace")
def audit_trace(
    workflow_id: Annotated[str, typer.Argument(help="workflow to reconstruct")],
    as_json: Annotated[bool, typer.Option("--json", help="the records as JSON instead of a timeline")] = False,
) -> None:
    """Reconstruct a workflow's full decision lineage from the audit store."""
    import json

    from baton.audit.store import StoreNotFoundError
    from baton.audit.trace import render_timeline, trace_workflow
    from services.auditor.config import Settings

    async def go() -> list[dict[str, Any]] | None:
        try:
            store = Settings().build_store(create=False)
        except StoreNotFoundError:
            return None
        try:
            return await trace_workflow(store, workflow_id) if await store.exists() else None
        finally:
            await store.close()

    records = asyncio.run(go())
    if records is None:
        typer.echo("no audit store where BATON_AUDITOR_* points: nothing to trace (nothing was created)", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.items() if k != "_id"} for r in records], indent=2, default=str))
    else:
        typer.echo(render_timeline(workflow_id, records))
    if not records:
        raise typer.Exit(1)


@schemas_app.command("check")
def schemas_check() -> None:
    """Load every schema and run the BACKWARD compatibility gate between consecutive versions."""
    from baton.contracts.catalogue import load_catalogue
    from baton.contracts.compat import check_catalogue

    cat = load_catalogue()
    problems = check_catalogue(cat)
    for problem in problems:
        typer.echo(f"INCOMPATIBLE: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    versions = sum(len(v) for v in cat.by_subject.values())
    typer.echo(
        f"{len(cat.by_subject)} subjects, {versions} versions: every new version is BACKWARD compatible "
        "and every model mirrors its newest schema"
    )


WorkflowsOption = Annotated[
    Path | None, typer.Option("--workflows", help="workflow directory (default BATON_WORKFLOW_DIR, else ./workflows)")
]
ToolModulesOption = Annotated[
    str, typer.Option("--tools", envvar="BATON_AGENT_TOOLS", help="extra Python tool modules")
]


def _with_registry(workflows: Path | None, modules: str, use: Any) -> Any:
    """Start the registry of a workflow directory, call use(directory, specs, registry), close it."""
    from baton.tools.base import ToolError
    from baton.tools.loader import registry_for
    from baton.workflows import WorkflowDeclarationError, default_workflow_dir, load_workflows

    async def go() -> Any:
        directory = workflows or default_workflow_dir()
        specs = load_workflows(directory)
        registry = registry_for(directory, modules=[m.strip() for m in modules.split(",") if m.strip()])
        await registry.start()
        try:
            return use(directory, specs, registry)
        finally:
            await registry.close()

    try:
        return asyncio.run(go())
    except (ToolError, WorkflowDeclarationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@tools_app.command("check")
def tools_check(workflows: WorkflowsOption = None, tools: ToolModulesOption = "") -> None:
    """Refuse declarations that name an unknown tool, a version the registry does not offer, a lowered tier,
    or a pinned version whose schema changed incompatibly since `baton tools lock`."""
    from baton.tools.check import declaration_problems, read_lock
    from baton.workflows import TOOL_LOCK_FILE

    def use(directory: Path, specs: Any, registry: Any) -> list[str]:
        return declaration_problems(specs, registry, read_lock(directory / TOOL_LOCK_FILE))

    problems: list[str] = _with_registry(workflows, tools, use)
    for problem in problems:
        typer.echo(f"REFUSED: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("every declared tool is registered, pinned to the offered version and compatible with its lock")


@tools_app.command("lock")
def tools_lock(workflows: WorkflowsOption = None, tools: ToolModulesOption = "") -> None:
    """Record the schema of every pinned tool version in tools.lock.json beside the declarations."""
    from baton.tools.check import read_lock, write_lock
    from baton.workflows import TOOL_LOCK_FILE

    def use(directory: Path, specs: Any, registry: Any) -> list[str]:
        path = directory / TOOL_LOCK_FILE
        return write_lock(path, specs, registry, read_lock(path))

    refused: list[str] = _with_registry(workflows, tools, use)
    for ref in refused:
        typer.echo(f"NOT LOCKED: {ref} changed incompatibly; give it a new version instead", err=True)
    if refused:
        raise typer.Exit(1)
    typer.echo("tools.lock.json updated")


@tools_app.command("list")
def tools_list(workflows: WorkflowsOption = None, tools: ToolModulesOption = "") -> None:
    """Print every registered tool's declaration as JSON."""
    import json

    def use(directory: Path, specs: Any, registry: Any) -> list[dict[str, Any]]:
        return [d.as_schema() for d in registry.declarations()]

    typer.echo(json.dumps(_with_registry(workflows, tools, use), indent=2))


def _run(main: Any) -> Any:
    """asyncio.run(main), turning a missing identity or a configuration a service refuses into its message
    and exit code 2."""
    from baton.identity import IdentityConfigError
    from baton.runtime import ServiceConfigError

    try:
        return asyncio.run(main)
    except (IdentityConfigError, ServiceConfigError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option(help="directory to write keyring.json and one <role>.key per role into")],
) -> None:
    """Make an Ed25519 key pair for every role of the declared workflows: keyring.json (public, ship it with
    the declarations) and <role>.key files (private, each into its own service's secret)."""
    from baton.identity import TrustDomain, all_roles
    from baton.workflows import agent_kinds, load_workflows

    if out.exists() and any(out.iterdir()):
        typer.echo(f"{out} is not empty: refusing to overwrite keys; choose a new directory", err=True)
        raise typer.Exit(2)
    domain = TrustDomain.generate(all_roles(agent_kinds(load_workflows())))
    domain.write(out)
    typer.echo(f"{len(domain.identities)} identities written to {out}: keyring.json and {{role}}.key (mode 0600)")


@keys_app.command("matrix")
def keys_matrix() -> None:
    """Print the producer matrix (which role may publish which event on which topic) as a Markdown table."""
    from baton.topics import producer_matrix_markdown

    typer.echo(producer_matrix_markdown())


# (events, settings) -> the running service: a service module's `start`, or one with more wired in.
StartService = Callable[["EventBus", Any], Awaitable[Any]]


async def run_service(
    name: str, kind: str | None, *, start: StartService | None = None, wrap_bus: Callable[[Bus], Bus] | None = None
) -> None:
    """Run one service until SIGTERM: settings from the environment, health endpoint, bus (wrapped by wrap_bus)."""
    from baton.health import Health, serve_health
    from baton.runtime import build_bus, build_events
    from baton.telemetry import logs, metrics, tracing

    pkg = SERVICES[name]
    config: Any = importlib.import_module(f"{pkg}.config")
    if start is None:
        start = importlib.import_module(f"{pkg}.app").start
    settings = config.Settings(**({"kind": kind} if kind else {}))
    label = f"{name}-{settings.kind}" if name == "agent" else name
    logs.configure(label, settings.runtime.log_level, redact=name in ("agent", "policy-guard"))
    metrics.switch(settings.runtime.metrics)
    bus = None if wrap_bus is None else wrap_bus(build_bus(settings.runtime, client_id=label))
    events = build_events(settings.runtime, service=label, bus=bus)
    health = Health()
    server = None
    if settings.runtime.health_port is not None:
        # Up before start(): a probe sees "not ready" while partitions are being restored, not a refused port.
        server = await serve_health(health, port=settings.runtime.health_port)
    await events.bus.start()
    running = await start(events, settings)
    health.subscriptions = running.subscriptions
    health.tasks = getattr(running, "tasks", ())
    health.ready = True
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    typer.echo(f"{label} running on the {settings.runtime.bus} bus; SIGTERM to stop", err=True)
    await stop.wait()
    health.ready = False
    await running.stop()
    await events.bus.stop()
    tracing.flush()
    if server is not None:
        server.close()


@app.command("run")
def run(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")],
    kind: Annotated[str | None, typer.Option(help="agent kind (for `agent`), else BATON_AGENT_KIND")] = None,
) -> None:
    """Start one service in this process (configured through BATON_* environment variables)."""
    if service not in SERVICES:
        typer.echo(f"unknown service {service!r}; choose one of: {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    _run(run_service(service, kind))


@app.command("demo")
def demo(
    workflows: Annotated[int, typer.Option(help="how many workflows to run (both kinds, alternating)")] = 200,
    faults_per_kind: Annotated[int, typer.Option(help="workflows that get each injected fault")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the world, the fault plan and the scripted model")] = 7,
    timeout_s: Annotated[float, typer.Option(help="give up waiting for outcomes after this long")] = 300.0,
) -> None:
    """Run workflows with injected faults through every service on the embedded bus; print the summary."""
    from rich.console import Console

    from baton.telemetry import logs
    from baton_demo.demo import print_report, run_demo

    logs.configure("demo", "ERROR")  # every service in this process: errors only, as JSON lines on stderr
    console = Console()
    console.print(
        f"[bold]Baton demo[/]: {workflows} workflows through supervisor, handoff validator, policy guard, "
        "approval service and 7 agent services on the embedded bus, with injected faults"
    )
    report = asyncio.run(
        run_demo(
            workflows=workflows,
            faults_per_kind=faults_per_kind,
            seed=seed,
            timeout_s=timeout_s,
            console=console,
            world_dir=Path(".baton"),
        )
    )
    print_report(report, console)
    raise typer.Exit(0 if report.ok else 1)


@app.command("publish")
def publish(
    workflow_type: Annotated[str | None, typer.Argument(help="declared workflow type, e.g. support_refund")] = None,
    input_json: Annotated[
        str | None, typer.Argument(help='initial context as JSON, e.g. \'{"ticket_id": "tkt-00001"}\'')
    ] = None,
    tenant: Annotated[str, typer.Option(help="tenant id")] = "default",
    workflow_id: Annotated[str | None, typer.Option(help="workflow id (generated when omitted)")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="the same key names the same workflow: a retried publish runs it once")
    ] = None,
    tasks: Annotated[
        Path | None, typer.Option(help="publish every task of this JSON Lines file instead (see `baton local`)")
    ] = None,
) -> None:
    """Publish a TaskRequested to the tasks topic (BATON_BUS=kafka and BATON_KAFKA_BOOTSTRAP select the broker)."""
    import json

    from baton.client import BatonClient, Task, TaskFileError, load_tasks

    if tasks is not None:
        if workflow_type is not None or input_json is not None:
            typer.echo("give either --tasks FILE or WORKFLOW_TYPE INPUT_JSON, not both", err=True)
            raise typer.Exit(2)
        try:
            batch = load_tasks(tasks)
        except (OSError, TaskFileError) as exc:
            typer.echo(f"cannot read the tasks: {exc}", err=True)
            raise typer.Exit(2) from exc
    else:
        if workflow_type is None or input_json is None:
            typer.echo("give WORKFLOW_TYPE and INPUT_JSON (or --tasks FILE)", err=True)
            raise typer.Exit(2)
        try:
            context = json.loads(input_json)
        except json.JSONDecodeError as exc:
            typer.echo(f"INPUT_JSON is not JSON: {exc}", err=True)
            raise typer.Exit(2) from exc
        if not isinstance(context, dict):
            typer.echo(f"INPUT_JSON must be a JSON object (the initial context), got {input_json!r}", err=True)
            raise typer.Exit(2)
        batch = [
            Task(
                workflow_type=workflow_type,
                input=context,
                tenant=tenant,
                workflow_id=workflow_id,
                idempotency_key=idempotency_key,
            )
        ]

    async def go() -> list[str]:
        client = BatonClient.from_settings(name="baton-cli")
        await client.start()
        try:
            return [await client.submit_task(task) for task in batch]
        finally:
            await client.stop()

    for published in _run(go()):
        typer.echo(published)


@app.command("outcomes")
def outcomes(
    group: Annotated[str | None, typer.Option(help="consumer group (default: read everything from the start)")] = None,
    count: Annotated[int | None, typer.Option(help="exit after this many workflows' outcomes (default: tail)")] = None,
) -> None:
    """Tail workflow outcomes, one JSON line each."""
    from baton.client import BatonClient

    async def go() -> None:
        client = BatonClient.from_settings(name="baton-cli")
        await client.start()
        seen: set[str] = set()
        try:
            async with contextlib.aclosing(client.outcomes(group_id=group)) as stream:
                async for outcome in stream:
                    typer.echo(outcome.model_dump_json(exclude={"snapshot"}))
                    seen.add(outcome.envelope.workflow_id)
                    if count is not None and len(seen) >= count:
                        break
        finally:
            await client.stop()

    _run(go())


def _control(
    action: str, workflow: str | None, tenant: str | None, everything: bool, reason: str, timeout_s: float
) -> None:
    """Publish a control command as the operator and print who confirmed it (exit 1 naming who did not)."""
    import getpass

    from baton.contracts.models import ControlAction, ControlScope
    from baton.control import expected_confirmers, issue
    from baton.identity import OPERATOR
    from baton.runtime import RuntimeSettings, build_events, build_trust
    from baton.workflows import agent_kinds, load_workflows

    given = [
        (ControlScope.WORKFLOW, workflow),
        (ControlScope.TENANT, tenant),
        (ControlScope.ALL, None if not everything else ""),
    ]
    chosen = [(scope, target) for scope, target in given if target is not None]
    if len(chosen) != 1:
        typer.echo(f"baton {action.lower()}: give exactly one of --workflow ID, --tenant ID or --all", err=True)
        raise typer.Exit(2)
    scope, target = chosen[0]
    settings = RuntimeSettings()
    if settings.bus == "embedded":
        typer.echo(
            f"baton {action.lower()}: BATON_BUS is embedded, where no service runs outside `baton demo`/`baton local`; "
            "set BATON_BUS=kafka and BATON_KAFKA_BOOTSTRAP to reach the running services",
            err=True,
        )
        raise typer.Exit(2)

    async def go() -> Any:
        events = build_events(settings, service="baton-operator", trust=build_trust(settings, role=OPERATOR))
        await events.bus.start()
        try:
            return await issue(
                events,
                action=ControlAction(action),
                scope=scope,
                target=target or None,
                reason=reason,
                issued_by=getpass.getuser(),
                expected=expected_confirmers(agent_kinds(load_workflows())),
                timeout_s=timeout_s,
            )
        finally:
            await events.bus.stop()

    report = _run(go())
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        typer.echo(
            f"not confirmed within {timeout_s:g}s by: {', '.join(report.missing)} (is it running? its log says why)",
            err=True,
        )
        raise typer.Exit(1)


WorkflowScope = Annotated[str | None, typer.Option("--workflow", help="one workflow id")]
TenantScope = Annotated[str | None, typer.Option("--tenant", help="every workflow of one tenant")]
AllScope = Annotated[bool, typer.Option("--all", help="every workflow")]
ControlTimeout = Annotated[float, typer.Option("--timeout", help="seconds to wait for every service to confirm")]


@app.command("kill")
def kill(
    workflow: WorkflowScope = None,
    tenant: TenantScope = None,
    everything: AllScope = False,
    reason: Annotated[str, typer.Option(help="why (recorded in the audit and in each halted outcome)")] = "kill switch",
    timeout: ControlTimeout = 5.0,
) -> None:
    """Halt one workflow, a tenant or everything: running workflows end as halted KILLED, no tool runs after a
    service confirmed, new tasks in scope are refused until `baton resume`. Prints who confirmed and how fast."""
    _control("HALT", workflow, tenant, everything, reason, timeout)


@app.command("resume")
def resume(
    workflow: WorkflowScope = None,
    tenant: TenantScope = None,
    everything: AllScope = False,
    reason: Annotated[str, typer.Option(help="why")] = "resumed",
    timeout: ControlTimeout = 5.0,
) -> None:
    """Lift a kill of exactly that scope (new tasks are accepted again; halted workflows stay halted)."""
    _control("RESUME", workflow, tenant, everything, reason, timeout)


@app.command("bench")
def bench(
    quick: Annotated[bool, typer.Option(help="small sizes for development (still 3 alternating repetitions)")] = False,
    out: Annotated[Path, typer.Option(help="directory for report.md, report.json and the plots")] = Path("bench"),
    memory_marks: Annotated[
        str, typer.Option(help="workflow counts at which to sample each service's RSS (default: by mode)")
    ] = "",
) -> None:
    """Start Kafka and FerretDB, measure every figure against a baseline run alongside, write the report."""
    from baton_demo.perf.run import run_bench

    run_bench(out, quick=quick, memory_marks=tuple(int(m) for m in memory_marks.split(",") if m.strip()))


@app.command("soak")
def soak(
    service: Annotated[str, typer.Argument(help="supervisor, handoff-validator or auditor")],
    workflows: Annotated[int, typer.Option(help="complete workflows to drive through the handlers")] = 100_000,
    report_at: Annotated[
        str, typer.Option(help="comma-separated workflow counts at which to sample RSS")
    ] = "10000,100000",
    finished_capacity: Annotated[
        int, typer.Option(help="supervisor: finished workflows remembered for deduplication")
    ] = 10_000,
) -> None:
    """Drive a service's handlers through many workflows and print its RSS at each sample point."""
    from baton_demo.soak import soak as run_soak

    marks = [int(m) for m in report_at.split(",") if m.strip()]
    samples = asyncio.run(run_soak(service, workflows=workflows, report_at=marks, finished_capacity=finished_capacity))
    for s in samples:
        typer.echo(f"{service}: {s.workflows} workflows: RSS {s.rss_mib:.1f} MiB, {s.held} held, {s.elapsed_s:.0f}s")
    if len(samples) >= 2:
        growth = samples[-1].rss_mib / samples[0].rss_mib - 1
        typer.echo(
            f"{service}: RSS grew {growth:+.1%} from {samples[0].workflows} to {samples[-1].workflows} workflows"
        )


@dev_app.command("kafka")
def dev_kafka(
    port: Annotated[int, typer.Option(help="port of the broker's PLAINTEXT listener")] = 9092,
    partitions: Annotated[int, typer.Option(help="partitions of each auto-created topic")] = 4,
) -> None:
    """Run the test harness's single-node Apache Kafka broker (KRaft) in the foreground until Ctrl-C."""
    from baton.testbed.kafka_broker import KafkaBroker, fetch_kafka

    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # taken by sigwait below, so the broker is always stopped
    workdir = Path(tempfile.mkdtemp(prefix="baton-dev-kafka-"))
    broker = KafkaBroker(libs=fetch_kafka(), workdir=workdir, port=port)
    try:
        broker.start(partitions=partitions)
        typer.echo(f"Kafka {broker.version} at {broker.bootstrap} (log {broker.log_path}); Ctrl-C to stop", err=True)
        signal.sigwait(stop)
    finally:
        broker.stop()


@app.command("local")
def local(
    workflows: Annotated[Path, typer.Option(help="your workflow directory: *.yaml declarations and tools.yaml")],
    tasks: Annotated[Path, typer.Option(help="JSON Lines, one task each: workflow_type, input, tenant, workflow_id")],
    state: Annotated[Path, typer.Option(help="where the audit (and the agents' ledger) is kept")] = Path(".baton"),
    timeout_s: Annotated[float, typer.Option(help="give up waiting for outcomes after this long")] = 120.0,
) -> None:
    """Run a workflow directory's tasks through every service in this process on the embedded bus."""
    import logging

    from baton.client import TaskFileError, load_tasks
    from baton_demo.local import LocalStateError, run_local, summary

    try:
        batch = load_tasks(tasks)
    except (OSError, TaskFileError) as exc:
        typer.echo(f"cannot read the tasks: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(level=logging.ERROR)
    try:
        run = _run(run_local(workflow_dir=workflows, tasks=batch, state_dir=state, timeout_s=timeout_s))
    except LocalStateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for wf in sorted(run.outcomes):
        typer.echo(run.outcomes[wf].line())
    for line in summary(run, state):
        typer.echo(line)
    raise typer.Exit(0 if run.ok else 1)
