"""Telemetry pieces on their own: what a tool call's span holds is sanitized, log lines are JSON with the
trace and workflow, and the metric catalogue follows Prometheus's naming conventions."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from baton.agent import run_step
from baton.ledger import Ledger
from baton.model import ScriptedModel
from baton.telemetry import logs, metrics, tracing
from baton.workflows import load_workflows
from baton_demo.world import World
from tests.harness.world_tools import step_tools

WORKFLOWS = load_workflows()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "world.db")
    w.seed(customers=20, seed=3)
    yield w
    w.close()


async def test_a_tool_calls_arguments_reach_its_span_only_redacted(world: World, tmp_path: Path) -> None:
    email, card = "jane.doe@example.com", "4111 1111 1111 1111"
    exporter = InMemorySpanExporter()
    ledger = Ledger(tmp_path / "ledger.db")
    spec = WORKFLOWS["customer_onboarding"]
    try:
        with tracing.exporting_to(exporter), tracing.serving(tracing.tracer_for("agent-identity_verification")):
            tools = await step_tools(world, ledger, workflow_id="wf", agent="identity_verification", tenant="t")
            await run_step(
                workflow=spec,
                agent=spec.agent("identity_verification"),
                workflow_id="wf",
                context={"customer_id": f"{email} card {card}"},
                model=ScriptedModel(seed=1),
                tools=tools,
            )
    finally:
        ledger.close()
    spans = exporter.get_finished_spans()
    tool = next(s for s in spans if s.name == "execute_tool lookup_customer")
    assert tool.attributes is not None
    arguments = str(tool.attributes["gen_ai.tool.call.arguments"])
    assert "<EMAIL_ADDRESS>" in arguments and "<CREDIT_CARD>" in arguments
    everything = json.dumps([dict(s.attributes or {}) for s in spans], default=str)
    assert email not in everything and card not in everything
    chat = next(s for s in spans if s.name == "chat scripted")
    assert chat.attributes is not None and chat.attributes["gen_ai.usage.output_tokens"] == 30


def test_log_lines_are_json_with_service_trace_and_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    exporter = InMemorySpanExporter()
    try:
        logs.configure("supervisor", "INFO")
        with tracing.exporting_to(exporter):
            tracer = tracing.tracer_for("supervisor")
            with tracer.start_as_current_span("process baton.tasks") as span, logs.about("wf-7"):
                logging.getLogger("baton.test").warning('a "quoted" message\nover two lines: %s', 42)
            trace_id = f"{span.get_span_context().trace_id:032x}"
        logging.getLogger("baton.test").info("outside any workflow")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    first, second = lines
    assert first["msg"] == 'a "quoted" message\nover two lines: 42'
    assert (first["level"], first["logger"], first["service"]) == ("WARNING", "baton.test", "supervisor")
    assert first["trace_id"] == trace_id and first["workflow_id"] == "wf-7" and first["ts"]
    assert second["workflow_id"] is None and second["trace_id"] is None


def test_metric_names_follow_prometheus_conventions() -> None:
    families = [m for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")]
    assert len(families) >= 25
    for family in families:
        name = family._name
        assert name.startswith("baton_"), name
        if family._type == "counter":
            assert not name.endswith("_total"), f"{name}: the client appends _total"
        if "seconds" in name or "latency" in name or "duration" in name:
            assert name.endswith("_seconds"), f"{name}: time in seconds, named so"
        assert family._documentation, f"{name} says what it measures"


def test_a_label_value_an_event_supplies_is_bounded() -> None:
    space = "test-space"
    kept = [metrics.bounded(space, f"tool-{i}", cap=5) for i in range(8)]
    assert kept == ["tool-0", "tool-1", "tool-2", "tool-3", "tool-4", "other", "other", "other"]
    assert metrics.bounded(space, "tool-3", cap=5) == "tool-3"  # one already seen keeps its name
    assert metrics.bounded("test-long", "x" * 1000) == "x" * 64
