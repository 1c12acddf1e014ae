"""Telemetry on a real Kafka broker, every service its own process exporting over OTLP/HTTP to a test
receiver: one workflow (a refund that waits for two reviewers) is one trace whose spans cover every service it
touched, in causal order; every service's /metrics parses with Prometheus's exposition-format parser and holds
the run's exact figures; every log line is one JSON object with the service, trace id and workflow id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from prometheus_client.parser import text_string_to_metric_families

from baton import identity, topics
from baton.audit.keys import encode_signing_key, generate_signing_key
from baton.bus.base import BusRecord
from baton.bus.kafka import KafkaBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import ToolCallAuthorized, ToolCallDenied
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus
from baton.telemetry import tracing
from baton.testbed.processes import ServiceProcesses
from baton.workflows import load_workflows
from baton_demo.reviewer import DEMO_TOKENS, REFUND_CEILING, ScriptedReviewer
from baton_demo.world import World
from tests.harness.identities import trust, write_keys
from tests.harness.kafka_broker import KafkaBroker, free_port
from tests.harness.otlp import OtlpReceiver, ReceivedSpan, causal_problems, trace_of

pytestmark = pytest.mark.e2e

AGENTS = [a.name for a in load_workflows()["support_refund"].agents]
SMALL = 20
SERVICES = ("supervisor", "handoff-validator", "policy-guard", "approvals", "auditor")


async def _until(
    what: str, check: Callable[[], Awaitable[bool]], procs: ServiceProcesses, timeout_s: float = 180
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if await check():
                return
        await asyncio.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout_s:.0f}s; dead processes: {procs.dead()}")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, parsed by prometheus_client's exposition-format parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


async def test_one_workflow_is_one_trace_across_every_service_and_every_metrics_page_holds_the_run(
    own_broker: KafkaBroker, tmp_path: Path
) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=300, seed=11)
    amounts = {t: world.preview_refund(t)["amount"] for t in world.ticket_ids()}
    approved = next(t for t, a in amounts.items() if 500 < a <= REFUND_CEILING)
    small = [t for t, a in amounts.items() if 0 < a <= 500][:SMALL]
    receiver = OtlpReceiver().start()
    approvals_port = free_port()
    env = {
        "BATON_BUS": "kafka",
        "BATON_KAFKA_BOOTSTRAP": own_broker.bootstrap,
        "BATON_KEYS_DIR": str(write_keys(tmp_path / "keys")),
        "BATON_LOG_LEVEL": "INFO",
        "BATON_WORLD_DB": str(tmp_path / "world.db"),
        "BATON_AGENT_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_HANDOFF_VALIDATOR_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_POLICY_GUARD_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_SUPERVISOR_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_SUPERVISOR_AWAIT_APPROVALS": "true",
        "BATON_APPROVALS_SQLITE_PATH": str(tmp_path / "approvals.db"),
        "BATON_APPROVALS_HTTP_PORT": str(approvals_port),
        "BATON_APPROVALS_ALLOW_DEMO_REVIEWERS": "true",
        "BATON_AUDITOR_STORE": "embedded",
        "BATON_AUDITOR_SQLITE_PATH": str(tmp_path / "audit.db"),
        "BATON_AUDITOR_SIGNING_KEY": encode_signing_key(generate_signing_key()),
        # The standard OpenTelemetry variables, nothing Baton-specific: an OTLP/HTTP endpoint turns tracing on.
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    (tmp_path / "logs").mkdir()
    procs = ServiceProcesses(env=env, logdir=tmp_path / "logs")
    health = {name: free_port() for name in (*SERVICES, *(f"agent-{a}" for a in AGENTS))}
    bus = KafkaBus(own_broker.bootstrap, client_id="telemetry-e2e")
    await bus.start()
    await bus.create_topics([*topics.CORE_TOPICS, *(topics.agent_steps(a) for a in AGENTS)])
    serde = AvroSerde(LocalSchemaRegistry())
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{approvals_port}", timeout=10)
    scrape = httpx.AsyncClient(timeout=10)
    # The upstream system traces too: its `send baton.tasks` span is the root of each workflow's trace.
    upstream = contextlib.ExitStack()
    upstream.enter_context(tracing.exporting_to(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")))
    client = BatonClient(
        EventBus(
            bus=bus,
            serde=serde,
            producer="e2e-client",
            trust=trust(identity.CLIENT),
            tracer=tracing.tracer_for("upstream"),
        )
    )
    outcomes: dict[str, Outcome] = {}

    async def collect() -> None:
        async with contextlib.aclosing(client.outcomes()) as stream:
            async for outcome in stream:
                outcomes.setdefault(outcome.envelope.workflow_id, outcome)

    collector = asyncio.create_task(collect())
    pages: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    try:
        for service in SERVICES:
            procs.start(service, service, env={"BATON_HEALTH_PORT": str(health[service])})
        for kind in AGENTS:
            procs.start(
                f"agent-{kind}", "agent", "--kind", kind, env={"BATON_HEALTH_PORT": str(health[f"agent-{kind}"])}
            )

        async def all_ready() -> bool:
            answers = [await scrape.get(f"http://127.0.0.1:{port}/readyz") for port in health.values()]
            return all(a.status_code == 200 for a in answers)

        await _until("every service ready (/readyz)", all_ready, procs)
        for name, ticket in (("tel-approved", approved), *((f"tel-small-{i}", t) for i, t in enumerate(small))):
            tenant = world.tenant_of("ticket_id", ticket)
            assert tenant is not None
            await client.submit("support_refund", {"ticket_id": ticket}, tenant_id=tenant, workflow_id=name)

        async def one_pending() -> bool:
            answer = await api.get("/api/approvals", headers={"Authorization": f"Bearer {DEMO_TOKENS['alice']}"})
            return answer.status_code == 200 and len(answer.json()) == 1

        await _until("the refund's approval pending", one_pending, procs)
        assert await ScriptedReviewer(api).review_once() == 1

        async def all_ended() -> bool:
            return len(outcomes) == SMALL + 1

        await _until("every workflow's outcome", all_ended, procs)
        lag_ports = {health["auditor"], health["supervisor"]}

        async def caught_up() -> bool:
            # The auditor stored everything (its lag is 0 on every partition it owns), so its figures are final.
            for port in lag_ports:
                samples = _samples((await scrape.get(f"http://127.0.0.1:{port}/metrics")).text)
                if _sum(samples, "baton_consumer_lag_messages") != 0:
                    return False
            return True

        await _until("the auditor and the supervisor caught up", caught_up, procs)
        await asyncio.sleep(1)
        for name, port in health.items():
            answer = await scrape.get(f"http://127.0.0.1:{port}/metrics")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
            pages[name] = _samples(answer.text)
            assert (await scrape.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        counted: Counter[str] = Counter()

        async def count(record: BusRecord) -> None:
            counted[type(await serde.decode(record.value)).__name__] += 1

        await bus.replay([topics.HANDOFF_VERDICTS, topics.TOOL_VERDICTS], count)
        dead_letters = sum((await bus.end_offsets(topics.DEAD_LETTER)).values())
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await api.aclose()
        await scrape.aclose()
        procs.stop_all()  # SIGTERM: each flushes its last spans
        await bus.stop()
        upstream.close()

    try:
        # -- the outcomes ------------------------------------------------------------------------------------
        assert {wf: type(o).__name__ for wf, o in outcomes.items()} == {
            "tel-approved": "WorkflowCompleted",
            **{f"tel-small-{i}": "WorkflowCompleted" for i in range(SMALL)},
        }
        assert dead_letters == 0

        # -- one trace per workflow, over OTLP ----------------------------------------------------------------
        def workflow_root(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
            return next(
                (
                    s
                    for s in spans
                    if s.name == "invoke_workflow support_refund"
                    and s.attributes.get("baton.workflow.id") == "tel-approved"
                ),
                None,
            )

        everyone = {*SERVICES, *(f"agent-{a}" for a in AGENTS)}

        def complete(spans: list[ReceivedSpan]) -> bool:
            root = workflow_root(spans)
            if root is None:
                return False
            mine = trace_of(spans, root.trace_id)
            return everyone <= {s.service for s in mine} and not list(causal_problems(mine))

        def explain(spans: list[ReceivedSpan]) -> str:
            root = workflow_root(spans)
            if root is None:
                return "no invoke_workflow span for tel-approved"
            mine = trace_of(spans, root.trace_id)
            return f"services missing: {everyone - {s.service for s in mine}}; {list(causal_problems(mine))[:10]}"

        spans = receiver.wait_for(complete, timeout_s=30, explain=explain)
        root = workflow_root(spans)
        assert root is not None
        mine = trace_of(spans, root.trace_id)
        assert {s.service for s in mine} >= everyone
        assert root.parent_span_id and next(s for s in mine if not s.parent_span_id).service == "upstream"
        assert list(causal_problems(mine)) == []
        names = Counter(s.name for s in mine)
        for name in (
            "invoke_workflow support_refund",
            "invoke_agent ticket_lookup",
            "invoke_agent refund_preview",
            "invoke_agent refund_issuer",
            "chat scripted",
            "execute_tool issue_refund",
            "run_guardrail baton.policy-guard",
            f"send {topics.TASKS}",
            f"process {topics.TASKS}",
            f"send {topics.APPROVAL_REQUESTS}",
            f"process {topics.APPROVAL_REQUESTS}",
            f"send {topics.APPROVAL_DECISIONS}",
            f"process {topics.HANDOFF_PROPOSALS}",
            f"send {topics.OUTCOMES}",
        ):
            assert names[name] >= 1, (name, sorted(names))
        # Asked once and refused for want of approval, then run once after it.
        refund = [s for s in mine if s.name == "execute_tool issue_refund"]
        assert sorted(str(s.attributes.get("error.type", "ran")) for s in refund) == ["APPROVAL_REQUIRED", "ran"]
        process = next(s for s in mine if s.name == f"process {topics.TASKS}" and s.service == "supervisor")
        assert process.attributes["messaging.system"] == "kafka"
        assert process.attributes["messaging.operation.type"] == "process"
        assert process.attributes["messaging.consumer.group.name"] == topics.GROUP_SUPERVISOR
        assert process.attributes["messaging.kafka.message.key"] == "tel-approved"
        assert isinstance(process.attributes["messaging.kafka.offset"], int)
        assert process.attributes["messaging.destination.partition.id"].isdigit()
        # Every other workflow is a trace of its own.
        roots = [s for s in spans if s.name == "invoke_workflow support_refund"]
        assert len({s.trace_id for s in roots}) == len(roots) == SMALL + 1

        # -- every service's /metrics holds the run ------------------------------------------------------------
        sup, validator, guard = pages["supervisor"], pages["handoff-validator"], pages["policy-guard"]
        total = SMALL + 1
        assert _sum(sup, "baton_workflows_started_total", workflow="support_refund") == total
        assert _sum(sup, "baton_workflow_outcomes_total", outcome="completed") == total
        assert _sum(sup, "baton_workflow_outcomes_total") == total
        assert _sum(sup, "baton_workflow_steps_count", workflow="support_refund") == total
        assert _sum(sup, "baton_workflow_cost_usd_total", outcome="completed") > 0
        assert _sum(validator, "baton_handoffs_total", verdict="accepted") == counted["HandoffAccepted"]
        assert _sum(validator, "baton_handoffs_total") == counted["HandoffAccepted"] + counted["HandoffRejected"]
        assert _sum(validator, "baton_handoff_latency_seconds_count") == counted["HandoffAccepted"]
        assert _sum(guard, "baton_guard_verdicts_total", verdict="allow") == counted[ToolCallAuthorized.__name__]
        assert _sum(guard, "baton_guard_verdicts_total", verdict="deny") == counted[ToolCallDenied.__name__] == 1
        assert _sum(guard, "baton_guard_denials_total", reason="APPROVAL_REQUIRED") == 1
        issuer = pages["agent-refund_issuer"]
        assert _sum(issuer, "baton_tool_calls_total", tool="issue_refund", result="ok") == total
        assert _sum(issuer, "baton_tool_calls_total", tool="issue_refund", result="denied") == 1
        assert _sum(issuer, "baton_decision_latency_seconds_count", agent="refund_issuer") == total + 1
        assert _sum(issuer, "baton_model_tokens_total", agent="refund_issuer") > 0
        approvals = pages["approvals"]
        assert _sum(approvals, "baton_approvals_requested_total", queue="support-leads") == 1
        assert _sum(approvals, "baton_approvals_decided_total", queue="support-leads", decision="approved") == 1
        assert _sum(approvals, "baton_approvals_pending", queue="support-leads") == 0
        assert _sum(pages["auditor"], "baton_events_processed_total", topic=topics.OUTCOMES) == total
        for name, page in pages.items():
            assert _sum(page, "baton_dead_letters_total") == 0, name
            assert _sum(page, "process_resident_memory_bytes") > 0, name
        assert any(n == "baton_consumer_lag_messages" for n, _ in pages["supervisor"])

        # -- logs: one JSON object per line, with service, trace and workflow ---------------------------------
        lines = (tmp_path / "logs" / "approvals.log").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        pending = [r for r in records if r["msg"].startswith("approval ") and "pending" in r["msg"]]
        assert pending and pending[0]["service"] == "approvals" and pending[0]["workflow_id"] == "tel-approved"
        assert pending[0]["trace_id"] == root.trace_id and pending[0]["level"] == "INFO"
    finally:
        receiver.stop()
        world.close()
