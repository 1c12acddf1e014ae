"""W3C trace context travels from a consumed message to what its handler publishes, with tracing off (the
context only) and on (a `process` span, then a `send` span, each the child of the one before)."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.contracts.models import ControlAction, ControlCommand, ControlScope, Envelope, Event
from baton.contracts.serde import AvroSerde
from baton.messaging import TRACEPARENT, EventBus, EventConsumer
from baton.telemetry import tracing
from tests.harness.collect import Collector
from tests.harness.identities import signed_headers, trust

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


async def _relay_once(serde: AvroSerde, parent: bytes | None) -> list[BusRecord]:
    bus = EmbeddedBus(partitions=2)
    events = EventBus(
        bus=bus, serde=serde, producer="test", trust=trust("supervisor"), tracer=tracing.tracer_for("relay")
    )
    command = ControlCommand(
        envelope=Envelope(workflow_id="wf", tenant_id="t", producer="test"),
        command=ControlAction.HALT,
        scope=ControlScope.ALL,
        reason="r",
        issued_by="op",
    )

    async def relay(event: Event, record: BusRecord) -> None:
        data = await events.publish("t.out", event)  # the typed path
        await events.publish_encoded("t.again", data, workflow_id=event.envelope.workflow_id)  # the replay path

    out: Collector[BusRecord] = Collector()
    await bus.subscribe(["t.in"], group_id="relay", handler=EventConsumer(events, group_id="relay", handler=relay))
    await bus.subscribe(["t.out", "t.again"], group_id="watch", handler=out.add)
    value = await serde.encode(command)
    headers = signed_headers("operator", "t.in", b"wf", value)
    if parent is not None:
        headers = ((TRACEPARENT, parent), *headers)
    await bus.publish("t.in", value, key=b"wf", headers=headers)
    records = await out.wait_for_count(2)
    await bus.stop()
    assert records[0].value == records[1].value
    return records


def _ids(record: BusRecord) -> tuple[str, str]:
    header = record.header(TRACEPARENT)
    assert header is not None
    _version, trace_id, span_id, _flags = header.decode().split("-")
    return trace_id, span_id


async def test_with_tracing_off_a_handler_publishes_in_the_trace_of_the_message_it_handles(serde: AvroSerde) -> None:
    assert not tracing.enabled()
    for record in await _relay_once(serde, PARENT.encode()):
        assert _ids(record)[0] == TRACE_ID


async def test_a_message_without_trace_context_or_with_a_forged_one_starts_one_new_trace(serde: AvroSerde) -> None:
    # An attacker's megabyte "trace id" never rides along into what Baton publishes.
    for parent in (None, b"garbage", b"00-x-y-z", ("00-" + "a" * 100_000 + "-b7ad6b7169203331-01").encode()):
        records = await _relay_once(serde, parent)
        trace_ids = {_ids(r)[0] for r in records}
        assert len(trace_ids) == 1 and len(next(iter(trace_ids))) == 32 and TRACE_ID not in trace_ids


async def test_with_tracing_on_process_and_send_spans_chain_from_the_incoming_context(serde: AvroSerde) -> None:
    exporter = InMemorySpanExporter()
    with tracing.exporting_to(exporter):
        records = await _relay_once(serde, PARENT.encode())
    spans = {s.name: s for s in exporter.get_finished_spans()}
    process, send, again = spans["process t.in"], spans["send t.out"], spans["send t.again"]
    assert process.kind is SpanKind.CONSUMER and send.kind is SpanKind.PRODUCER
    assert {f"{s.context.trace_id:032x}" for s in (process, send, again)} == {TRACE_ID}
    assert process.parent is not None and f"{process.parent.span_id:016x}" == "b7ad6b7169203331"
    assert send.parent is not None and send.parent.span_id == process.context.span_id
    assert process.attributes is not None and send.attributes is not None
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.destination.name"] == "t.in"
    assert process.attributes["messaging.consumer.group.name"] == "relay"
    assert process.attributes["messaging.kafka.offset"] == 0
    assert process.attributes["messaging.kafka.message.key"] == "wf"
    assert process.attributes["baton.event.type"] == "ControlCommand"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.message.id"] == process.attributes["messaging.message.id"]
    assert process.resource.attributes["service.name"] == "relay"
    # What the handler published names its own send span as the parent of whoever consumes it next.
    published = {r.topic: _ids(r) for r in records}
    assert published["t.out"] == (TRACE_ID, f"{send.context.span_id:016x}")
