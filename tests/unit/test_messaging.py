"""What every consumer checks before a handler sees an event: its topic and its envelope."""

from __future__ import annotations

from typing import Any

import pytest

from baton import topics
from baton.bus.base import MAX_MESSAGE_BYTES, BusRecord, BusUnavailableError, RetryLaterError
from baton.bus.embedded import EmbeddedBus
from baton.contracts.models import DeadLettered, Envelope, Event, StepCompleted, TaskRequested
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus, EventConsumer, envelope_problems, misplaced
from tests.harness.identities import signed_record, trust


def _task(**envelope: object) -> TaskRequested:
    env = Envelope(workflow_id="wf-1", tenant_id="t1", producer="test").model_copy(update=envelope)
    return TaskRequested(envelope=env, workflow_type="support_refund", input_json="{}", requested_by="test")


def test_each_baton_topic_takes_only_its_own_event_types() -> None:
    assert misplaced(_task(), topics.TASKS) is None
    reason = misplaced(_task(), topics.STEP_RESULTS)
    assert reason is not None and "carries ['StepCompleted'] only, not TaskRequested" in reason
    assert misplaced(_task(), topics.agent_steps("ticket_lookup")) is not None
    assert misplaced(_task(), "team.own-topic") is None  # not Baton's: its subscriber decides


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"tenant_id": ""}, "tenant_id is empty"),
        ({"workflow_id": "  "}, "workflow_id is empty"),
        ({"step_seq": -1}, "step_seq is -1"),
        ({"producer": ""}, "producer is empty"),
        ({"event_type": "StepCompleted"}, "event_type says 'StepCompleted'"),
    ],
)
def test_a_malformed_envelope_is_named(change: dict[str, object], problem: str) -> None:
    assert envelope_problems(_task()) == []
    assert any(problem in p for p in envelope_problems(_task(**change)))


async def _consumer(handler_error: BaseException | None) -> tuple[EventConsumer, EmbeddedBus, AvroSerde, list[Event]]:
    bus = EmbeddedBus(partitions=1)
    serde = AvroSerde(LocalSchemaRegistry())
    handled: list[Event] = []

    async def handler(event: Event, record: BusRecord) -> None:
        handled.append(event)
        if handler_error is not None:
            raise handler_error

    consumer = EventConsumer(
        EventBus(bus=bus, serde=serde, producer="t", trust=trust("supervisor")), group_id="g", handler=handler
    )
    return consumer, bus, serde, handled


async def _dead(bus: EmbeddedBus, serde: AvroSerde) -> list[DeadLettered]:
    out = []
    for record in bus.log_of((topics.DEAD_LETTER, 0)):
        event = await serde.decode(record.value)
        assert isinstance(event, DeadLettered)
        out.append(event)
    return out


async def test_misplaced_and_malformed_events_are_dead_lettered_with_their_reason() -> None:
    consumer, bus, serde, handled = await _consumer(None)
    step = StepCompleted(envelope=Envelope(workflow_id="wf", tenant_id="t", producer="p"), agent="a", succeeded=True)
    await consumer(signed_record("client", topics.TASKS, await serde.encode(step), key=b"wf", offset=0))
    await consumer(signed_record("client", topics.TASKS, await serde.encode(_task(tenant_id="")), key=b"wf", offset=1))
    await consumer(signed_record("client", topics.TASKS, await serde.encode(_task()), key=b"wf", offset=2))
    assert [type(e).__name__ for e in handled] == ["TaskRequested"]
    dead = await _dead(bus, serde)
    assert [(d.source_offset, d.reason_code) for d in dead] == [(0, "WRONG_TOPIC"), (1, "BAD_ENVELOPE")]
    assert "tenant_id is empty" in dead[1].reason and dead[1].envelope.tenant_id == "unknown"


@pytest.mark.parametrize("outage", [BusUnavailableError("broker timed out"), RetryLaterError("step busy")])
async def test_an_outage_is_raised_for_the_bus_to_retry_never_dead_lettered(outage: Exception) -> None:
    consumer, bus, serde, handled = await _consumer(outage)
    with pytest.raises(type(outage)):
        await consumer(signed_record("client", topics.TASKS, await serde.encode(_task()), key=b"wf", offset=0))
    assert len(handled) == 1 and await _dead(bus, serde) == []


async def test_a_handler_that_keeps_failing_is_dead_lettered_after_its_attempts() -> None:
    consumer, bus, serde, handled = await _consumer(KeyError("bug"))
    await consumer(signed_record("client", topics.TASKS, await serde.encode(_task()), key=b"wf", offset=0))
    assert len(handled) == 3
    [dead] = await _dead(bus, serde)
    assert dead.reason_code == "HANDLER_FAILED" and "KeyError" in dead.reason


async def test_a_megabyte_id_is_refused_and_its_dead_letter_still_fits_on_the_bus() -> None:
    consumer, bus, serde, handled = await _consumer(None)
    huge = "w" * 1_400_000
    value = await serde.encode(_task(workflow_id=huge, correlation_id=huge))
    await consumer(signed_record("client", topics.TASKS, value, key=huge.encode(), offset=0))
    assert handled == []
    [dead] = await _dead(bus, serde)
    assert dead.reason_code == "BAD_ENVELOPE" and "workflow_id is 1400000 bytes, over 256" in dead.reason
    assert len(dead.envelope.workflow_id.encode()) <= 256 and "sha256" in dead.envelope.workflow_id
    assert len(bus.log_of((topics.DEAD_LETTER, 0))[0].value) <= MAX_MESSAGE_BYTES


class _ForeignRegistry(LocalSchemaRegistry):
    """A shared registry that also holds other producers' schemas, e.g. a plain string or Protobuf."""

    async def schema_by_id(self, schema_id: int) -> Any:
        if schema_id == 4242:
            return "string"
        return await super().schema_by_id(schema_id)


async def test_a_record_whose_schema_is_not_an_avro_record_is_dead_lettered_not_retried() -> None:
    bus = EmbeddedBus(partitions=1)
    serde = AvroSerde(_ForeignRegistry())
    handled: list[Event] = []

    async def handler(event: Event, record: BusRecord) -> None:
        handled.append(event)

    consumer = EventConsumer(
        EventBus(bus=bus, serde=serde, producer="t", trust=trust("supervisor")), group_id="g", handler=handler
    )
    await consumer(signed_record("client", topics.TASKS, b"\x00\x00\x00\x10\x92\x02hi", key=b"wf", offset=0))
    [dead] = await _dead(bus, serde)
    assert dead.reason_code == "UNSUPPORTED_SCHEMA" and "not an Avro record schema" in dead.reason
