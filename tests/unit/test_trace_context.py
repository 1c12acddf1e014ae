"""W3C trace context travels from a consumed message to what its handler publishes."""

from __future__ import annotations

from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.contracts.models import ControlAction, ControlCommand, ControlScope, Envelope, Event
from baton.contracts.serde import AvroSerde
from baton.messaging import TRACEPARENT, EventBus, EventConsumer
from tests.harness.collect import Collector
from tests.harness.identities import signed_headers, trust


async def test_a_handler_publishes_in_the_trace_of_the_message_it_handles(serde: AvroSerde) -> None:
    bus = EmbeddedBus(partitions=2)
    events = EventBus(bus=bus, serde=serde, producer="test", trust=trust("supervisor"))
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
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    value = await serde.encode(command)
    headers = ((TRACEPARENT, parent.encode()), *signed_headers("operator", "t.in", b"wf", value))
    await bus.publish("t.in", value, key=b"wf", headers=headers)
    records = await out.wait_for_count(2)
    for record in records:
        header = record.header(TRACEPARENT)
        assert header is not None
        _version, trace_id, span_id, _flags = header.decode().split("-")
        assert trace_id == "0af7651916cd43dd8448eb211c80319c" and span_id != "b7ad6b7169203331"
    assert records[0].value == records[1].value
    await bus.stop()


def test_a_traceparent_that_is_not_w3c_starts_a_new_trace() -> None:
    from baton.messaging import child_traceparent

    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert child_traceparent(good).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    # An attacker's megabyte "trace id" never rides along into what Baton publishes.
    for bad in ("00-" + "a" * 1_000_000 + "-b7ad6b7169203331-01", "00-x-y-z", "garbage"):
        child = child_traceparent(bad)
        assert len(child) == 55 and child.split("-")[1] != bad.split("-")[-3:][0]
