"""Telemetry through every service on the embedded bus: one workflow is one trace whose spans cover every
service it touched, each span the child of what caused it; the metrics count the run exactly."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.contracts.models import Event, WorkflowCompleted, WorkflowEscalated, WorkflowHalted
from baton.messaging import EventConsumer
from baton.telemetry import tracing
from baton_demo.mesh import start_mesh
from baton_demo.reviewer import REFUND_CEILING
from baton_demo.world import World
from tests.harness.otlp import OtlpReceiver

Outcome = WorkflowCompleted | WorkflowHalted | WorkflowEscalated


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def trace_of(spans: list[ReadableSpan], workflow_id: str) -> list[ReadableSpan]:
    """Every span in the trace of a workflow (the trace its invoke_workflow span is in)."""
    root = next(
        s
        for s in spans
        if s.name.startswith("invoke_workflow") and s.attributes and s.attributes["baton.workflow.id"] == workflow_id
    )
    assert root.context is not None
    return [s for s in spans if s.context is not None and s.context.trace_id == root.context.trace_id]


def assert_causal(spans: list[ReadableSpan]) -> None:
    """One root; every other span's parent is in the trace and started no later than the span itself."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1, [s.name for s in roots]
    for span in spans:
        if span.parent is None:
            continue
        parent = by_id.get(span.parent.span_id)
        assert parent is not None, f"{span.name}'s parent is not in the trace"
        assert parent.start_time is not None and span.start_time is not None
        assert parent.start_time <= span.start_time, f"{span.name} started before its parent {parent.name}"


async def test_one_refund_with_an_approval_is_one_trace_across_every_service_and_counted_once(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    world = World(tmp_path / "world.db")
    world.seed(customers=300, seed=5)
    approved = next(t for t in world.ticket_ids() if 500 < world.preview_refund(t)["amount"] <= REFUND_CEILING)
    small = [t for t in world.ticket_ids() if world.preview_refund(t)["amount"] <= 500][:4]
    completed_before = _value(
        "baton_workflow_outcomes_total", workflow="support_refund", outcome="completed", reason="COMPLETED"
    )
    accepted_before = _value("baton_handoffs_total", to_agent="refund_preview", verdict="accepted")
    approvals_before = _value("baton_approvals_decided_total", queue="support-leads", decision="approved")
    with tracing.exporting_to(exporter):
        bus = EmbeddedBus(partitions=4)
        await bus.start()
        mesh = await start_mesh(
            bus, world_db=tmp_path / "world.db", audit_db=tmp_path / "audit.db", approvals=True, reviewer=True
        )
        outcomes: dict[str, Outcome] = {}

        async def keep(event: Event, record: BusRecord) -> None:
            if isinstance(event, WorkflowCompleted | WorkflowHalted | WorkflowEscalated):
                outcomes.setdefault(event.envelope.workflow_id, event)

        watch = mesh.events("test-observer", role=identity.CLIENT)
        await bus.subscribe(
            [topics.OUTCOMES], group_id="test.observer", handler=EventConsumer(watch, group_id="t", handler=keep)
        )
        client = BatonClient(mesh.events("test-client", role=identity.CLIENT), requested_by="upstream")
        try:
            tickets = {"wf-approved": approved, **{f"wf-small-{i}": t for i, t in enumerate(small)}}
            for wf, ticket in tickets.items():
                tenant = world.tenant_of("ticket_id", ticket)
                assert tenant is not None
                await client.submit("support_refund", {"ticket_id": ticket}, tenant_id=tenant, workflow_id=wf)
            for _ in range(1500):
                if len(outcomes) == len(tickets):
                    break
                await asyncio.sleep(0.02)
            assert {wf: type(o).__name__ for wf, o in outcomes.items()} == {wf: "WorkflowCompleted" for wf in tickets}
            for _ in range(200):  # the auditor stores in batches: wait for it to reach the outcomes
                stored = sqlite3.connect(tmp_path / "audit.db")
                n = stored.execute("SELECT COUNT(*) FROM audit_records WHERE topic = ?", (topics.OUTCOMES,)).fetchone()
                stored.close()
                if n[0] >= len(tickets):
                    break
                await asyncio.sleep(0.05)
        finally:
            await mesh.stop()
            await bus.stop()
            world.close()
    spans = trace_of(list(exporter.get_finished_spans()), "wf-approved")
    services = {str(s.resource.attributes["service.name"]) for s in spans}
    assert {
        "supervisor",
        "handoff-validator",
        "policy-guard",
        "approvals",
        "auditor",
        "agent-ticket_lookup",
        "agent-refund_preview",
        "agent-refund_issuer",
    } <= services, services
    assert_causal(spans)
    names = {s.name for s in spans}
    assert {
        "invoke_workflow support_refund",
        "invoke_agent refund_issuer",
        "execute_tool issue_refund",
        "run_guardrail baton.policy-guard",
        f"process {topics.APPROVAL_REQUESTS}",
        f"send {topics.APPROVAL_DECISIONS}",
        f"process {topics.OUTCOMES}",
    } <= names, sorted(names)
    assert "chat scripted" in names
    by_name = {s.name: s for s in spans}
    chat = next(s for s in spans if s.name.startswith("chat ") and s.attributes)
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat" and chat.attributes["gen_ai.provider.name"] == "baton"
    assert chat.attributes["gen_ai.request.model"] == "scripted"
    assert int(str(chat.attributes["gen_ai.usage.input_tokens"])) > 0
    issue = by_name["execute_tool issue_refund"].attributes
    assert issue is not None and issue["gen_ai.tool.name"] == "issue_refund" and issue["gen_ai.tool.call.id"]
    assert issue["baton.tool.tier"] == "IRREVERSIBLE"
    guard_verdicts = {
        str(s.attributes["gen_ai.guardrail.decision"])
        for s in spans
        if s.name.startswith("run_guardrail") and s.attributes
    }
    assert guard_verdicts == {"allow", "approval_required"}  # the refund waited for humans, then ran
    workflow_span = by_name["invoke_workflow support_refund"].attributes
    assert workflow_span is not None and workflow_span["baton.outcome"] == "completed"
    # The metrics counted every workflow once, and the approval.
    completed = _value(
        "baton_workflow_outcomes_total", workflow="support_refund", outcome="completed", reason="COMPLETED"
    )
    assert completed - completed_before == len(tickets)
    accepted = _value("baton_handoffs_total", to_agent="refund_preview", verdict="accepted")
    assert accepted - accepted_before == len(tickets)
    decided = _value("baton_approvals_decided_total", queue="support-leads", decision="approved")
    assert decided - approvals_before == 1


@pytest.mark.parametrize("env", [{}, {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}])
def test_tracing_is_off_unless_an_exporter_is_configured(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert not tracing.enabled()
    assert not tracing.tracer_for("supervisor").start_span("x").is_recording()


def test_spans_reach_an_otlp_http_receiver_with_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = OtlpReceiver().start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        assert tracing.enabled()
        with tracing.span(
            "execute_tool lookup", {"gen_ai.tool.name": "lookup"}, tracer=tracing.tracer_for("otlp-test")
        ):
            pass
        tracing.flush()
        spans = receiver.wait_for(lambda got: any(s.name == "execute_tool lookup" for s in got), timeout_s=10)
        span = next(s for s in spans if s.name == "execute_tool lookup")
        assert span.service == "otlp-test" and span.attributes["gen_ai.tool.name"] == "lookup"
    finally:
        tracing.shutdown()
        receiver.stop()
