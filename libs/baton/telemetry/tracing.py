"""Traces: one workflow is one trace, across every service, carried in Kafka headers.

OpenTelemetry's SDK, configured by the standard `OTEL_*` variables: tracing is on when an exporter is
configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER`
other than `none`) and `OTEL_SDK_DISABLED` is not true; otherwise no span is recorded and only the W3C trace
context travels on (so logs and an upstream tracer still see one trace id per workflow), at the cost of one
header parsed and one written per event.

Each service gets its own tracer provider (its own `service.name`), so the embedded mesh, every service in
one process, still shows each service as itself. The tracer of the service handling the current event is
in a context variable (`current_tracer`), so library code deep inside a handler (an agent's model call, a
tool call) records its spans under the right service without being handed a tracer.

Span names and attributes follow the current semantic conventions: messaging (`send {topic}`, `process
{topic}`) and GenAI (`invoke_workflow`, `invoke_agent`, `chat`, `execute_tool`); guard verdicts are
`run_guardrail` spans with `gen_ai.guardrail.*` attributes as proposed to the GenAI conventions (not yet
released: the names live in this module only). Baton's own attributes carry the prefix `baton.`.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

SCOPE = "baton"

# Messaging (semantic conventions 1.3x): the deprecated names the aiokafka auto-instrumentation still emits
# are not used.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_PARTITION = "messaging.destination.partition.id"
MESSAGING_GROUP = "messaging.consumer.group.name"
MESSAGING_OFFSET = "messaging.kafka.offset"
MESSAGING_KEY = "messaging.kafka.message.key"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_BODY_SIZE = "messaging.message.body.size"

# GenAI.
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
# Proposed (open-telemetry/semantic-conventions-genai, run_guardrail): not in a released version yet.
GEN_AI_GUARDRAIL_NAME = "gen_ai.guardrail.name"
GEN_AI_GUARDRAIL_DECISION = "gen_ai.guardrail.decision"
GEN_AI_GUARDRAIL_REASON = "gen_ai.guardrail.reason"
GEN_AI_GUARDRAIL_POLICY = "gen_ai.guardrail.policy.id"

_lock = threading.Lock()
_providers: dict[str, TracerProvider] = {}
_test_exporter: SpanExporter | None = None
_test_batch = False
_NOOP = trace.NoOpTracer()


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def enabled() -> bool:
    """Whether spans are recorded (an exporter configured, the SDK not disabled), or a test's exporter is set."""
    if _test_exporter is not None:
        return True
    if _truthy("OTEL_SDK_DISABLED"):
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _exporters() -> list[SpanExporter]:
    if _test_exporter is not None:
        return [_test_exporter]
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            )
            if protocol != "http/protobuf":
                raise ValueError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: Baton exports OTLP over HTTP (http/protobuf); "
                    "point it at the collector's HTTP receiver (port 4318)"
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none")
    return exporters


def tracer_for(service: str) -> Tracer:
    """The tracer of one service (its own provider and `service.name`); a no-op tracer when tracing is off."""
    if not enabled():
        return _NOOP
    with _lock:
        provider = _providers.get(service)
        if provider is None:
            # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override, as the specification says.
            resource = Resource.create({"service.name": service, "service.namespace": "baton"})
            provider = TracerProvider(resource=resource)
            for exporter in _exporters():
                if _test_exporter is not None and not _test_batch:
                    provider.add_span_processor(SimpleSpanProcessor(exporter))
                else:
                    provider.add_span_processor(BatchSpanProcessor(exporter))
            _providers[service] = provider
    return provider.get_tracer(SCOPE)


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered (a service calls it when it stops)."""
    with _lock:
        providers = list(_providers.values())
    for provider in providers:
        provider.force_flush(timeout_ms)


def shutdown() -> None:
    """Flush and stop every provider (at exit)."""
    with _lock:
        providers = list(_providers.values())
        _providers.clear()
    for provider in providers:
        provider.shutdown()


atexit.register(shutdown)


@contextlib.contextmanager
def exporting_to(exporter: SpanExporter, *, batch: bool = False) -> Iterator[None]:
    """Record every span of every service into exporter while the block runs (tests: the in-memory exporter,
    each span as it ends; batch: through the batching processor a service uses, as the bench measures it)."""
    global _test_exporter, _test_batch
    shutdown()
    _test_exporter, _test_batch = exporter, batch
    try:
        yield
    finally:
        flush()
        with _lock:
            _providers.clear()
        _test_exporter = None


# -- the tracer of the service handling the current event -----------------------------------------------------

_current: contextvars.ContextVar[Tracer] = contextvars.ContextVar("baton_tracer", default=_NOOP)


def current_tracer() -> Tracer:
    """The tracer of the service whose handler is running (no-op outside a handler or with tracing off)."""
    return _current.get()


@contextlib.contextmanager
def serving(tracer: Tracer) -> Iterator[None]:
    """Make tracer the current one for the block (the consumer of a service wraps its handler in it)."""
    token = _current.set(tracer)
    try:
        yield
    finally:
        _current.reset(token)


# -- W3C trace context in Kafka headers ------------------------------------------------------------------------

Headers = Sequence[tuple[str, bytes]]


class _HeaderGetter(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = [v.decode("latin-1") for k, v in carrier if k == key]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in carrier]


class _HeaderSetter(Setter[list[tuple[str, bytes]]]):
    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode("latin-1")))


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def _fresh_span_context() -> SpanContext:
    # Ids need uniqueness, not secrecy: the module's PRNG (seeded by the OS, reseeded after a fork), as the
    # SDK's own id generator does. Zero is invalid.
    return SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def extract(headers: Headers) -> Context:
    """The trace context a record carries. A record without a valid one starts a new trace: with tracing
    off, under a fresh (non-recording) span context, so what the handler publishes and logs still shares one
    trace id; a header that is not W3C trace context is ignored (it is not signed: never trusted further)."""
    ctx = propagate.extract(headers, getter=_GETTER)
    if trace.get_current_span(ctx).get_span_context().is_valid or enabled():
        return ctx
    return trace.set_span_in_context(NonRecordingSpan(_fresh_span_context()), ctx)


def inject(headers: list[tuple[str, bytes]]) -> None:
    """Append the current trace context to headers (a fresh trace when there is none, e.g. a client's task)."""
    if not trace.get_current_span().get_span_context().is_valid:
        ctx = trace.set_span_in_context(NonRecordingSpan(_fresh_span_context()))
        propagate.inject(headers, context=ctx, setter=_SETTER)
        return
    propagate.inject(headers, setter=_SETTER)


def trace_ids() -> tuple[str, str] | None:
    """The current trace and span id as hex (for logs), or None."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def traceparent() -> str | None:
    """The current context as a W3C traceparent (kept in a checkpoint so a later span can join the trace)."""
    carrier: list[tuple[str, bytes]] = []
    propagate.inject(carrier, setter=_SETTER)
    return next((v.decode("latin-1") for k, v in carrier if k == "traceparent"), None)


def context_of(parent: str | None) -> Context | None:
    """The context a stored traceparent names (None when it is missing or invalid)."""
    if not parent:
        return None
    ctx = propagate.extract([("traceparent", parent.encode("latin-1"))], getter=_GETTER)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


@contextlib.contextmanager
def joined(parent: str | None) -> Iterator[None]:
    """Inside the block, what is published joins the trace a stored traceparent names, unless a trace is
    current already (a background loop acting for a workflow: a delayed retry, a decision from an outbox)."""
    ctx = None if trace.get_current_span().get_span_context().is_valid else context_of(parent)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def sampled_out(ctx: Context | None = None) -> bool:
    """Whether the trace in ctx (default: the current one) was decided not sampled upstream: then no span of it is
    started at all (the parent-based sampler would drop it anyway), only its context passed on."""
    span_context = trace.get_current_span(ctx).get_span_context()
    return span_context.is_valid and not span_context.trace_flags.sampled


# -- spans -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    tracer: Tracer | None = None,
) -> Iterator[trace.Span]:
    """A span of the current service as a child of the current one (a no-op span when tracing is off)."""
    tracer = tracer or _current.get()
    if tracer is _NOOP or sampled_out():
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(name, kind=kind, attributes=_clean(attributes)) as current:
        yield current


def failed(span_: trace.Span, code: str, message: str) -> None:
    """Mark a span as an error with Baton's reason code."""
    if span_.is_recording():
        span_.set_attribute("error.type", code)
        span_.set_status(Status(StatusCode.ERROR, message[:512]))


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if attributes is None:
        return None
    return {k: v for k, v in attributes.items() if v is not None}


def set_attributes(span_: trace.Span, attributes: Mapping[str, Any]) -> None:
    """Set the attributes that have a value (a span only keeps str, bool, int, float and their lists)."""
    if span_.is_recording():
        span_.set_attributes(_clean(attributes) or {})
