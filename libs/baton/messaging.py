"""Typed events on a bus: encode and publish, decode and handle, dead-letter what cannot be processed."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from baton import identity, topics
from baton.bus.base import MAX_MESSAGE_BYTES, Bus, BusRecord, PartitionsCallback, RetryLaterError, Subscription
from baton.contracts.models import DeadLettered, Envelope, Event, stable_event_id
from baton.contracts.serde import AvroSerde, DecodeError
from baton.identity import SIGNATURE_HEADER, SIGNER_HEADER, AuthenticationError, Trust
from baton.telemetry import lag, logs, metrics, tracing

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"


class RejectedEvent(Exception):
    """A handler refuses an event for good (bad input); it is dead-lettered with this reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class EventBus:
    """Publishes typed events keyed by workflow id, signed by this process's identity, with trace context
    in headers; checks who signed what it consumes."""

    bus: Bus
    serde: AvroSerde
    producer: str
    trust: Trust
    # This service's tracer (baton.telemetry.tracing.tracer_for): a no-op one records nothing.
    tracer: Tracer = field(default_factory=trace.NoOpTracer)

    @property
    def role(self) -> str:
        """The role this process signs as."""
        return self.trust.identity.role

    def envelope(
        self,
        *,
        cause: Event | None = None,
        workflow_id: str | None = None,
        tenant_id: str | None = None,
        step_seq: int | None = None,
    ) -> Envelope:
        """A new envelope, inheriting workflow, tenant, step and correlation from the causing event."""
        parent = cause.envelope if cause is not None else None
        wf = workflow_id or (parent.workflow_id if parent else None)
        tenant = tenant_id or (parent.tenant_id if parent else None)
        if wf is None or tenant is None:
            raise ValueError("an envelope needs a workflow_id and tenant_id, or a causing event")
        return Envelope(
            workflow_id=wf,
            tenant_id=tenant,
            step_seq=step_seq if step_seq is not None else (parent.step_seq if parent else 0),
            causation_id=parent.event_id if parent else None,
            correlation_id=parent.correlation_id if parent and parent.correlation_id else wf,
            producer=self.producer,
        )

    async def publish(self, topic: str, event: Event) -> bytes:
        """Encode and publish; returns the bytes once the bus acknowledged the write."""
        data = await self.serde.encode(event)
        await self.publish_encoded(
            topic, data, workflow_id=event.envelope.workflow_id, event_id=event.envelope.event_id
        )
        return data

    async def publish_encoded(self, topic: str, data: bytes, *, workflow_id: str, event_id: str | None = None) -> None:
        """Publish an already encoded event again (same bytes, same event id), with trace context: a `send
        {topic}` span when tracing is on, the current trace context in the headers always."""
        key = workflow_id.encode()
        if not tracing.enabled() or tracing.sampled_out():
            await self._send(topic, data, key)
            return
        attributes = {
            tracing.MESSAGING_SYSTEM: "kafka",
            tracing.MESSAGING_OPERATION_TYPE: "send",
            tracing.MESSAGING_OPERATION_NAME: "send",
            tracing.MESSAGING_DESTINATION: topic,
            tracing.MESSAGING_KEY: workflow_id,
            tracing.MESSAGING_MESSAGE_ID: event_id,
        }
        with tracing.span(f"send {topic}", attributes, kind=SpanKind.PRODUCER, tracer=self.tracer) as span:
            try:
                await self._send(topic, data, key)
            except Exception as exc:
                tracing.failed(span, type(exc).__name__, str(exc))
                raise

    async def _send(self, topic: str, data: bytes, key: bytes) -> None:
        me = self.trust.identity
        headers: list[tuple[str, bytes]] = []
        tracing.inject(headers)
        headers.append((SIGNER_HEADER, me.key_id.encode()))
        headers.append((SIGNATURE_HEADER, me.sign(identity.signed_message(topic, key, data))))
        await self.bus.publish(topic, data, key=key, headers=tuple(headers))
        metrics.EVENTS_PUBLISHED.labels(topic).inc()

    def authenticate(self, record: BusRecord) -> str:
        """The role that signed this record; raises AuthenticationError when its signature does not prove one."""
        message = identity.signed_message(record.topic, record.key, record.value)
        return self.trust.keyring.verify(record.header(SIGNER_HEADER), record.header(SIGNATURE_HEADER), message)


EventHandler = Callable[[Event, BusRecord], Awaitable[None]]


_DEAD_LETTER_PAYLOAD_LIMIT = MAX_MESSAGE_BYTES // 2
_REASON_LIMIT = 4096

# What a handler may raise that means "try this record again later" rather than "this record is bad".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (RetryLaterError,)


# Ids are short strings; a megabyte "workflow id" would ride along in every checkpoint and key.
MAX_ID_BYTES = 256
_ID_FIELDS = ("event_id", "event_type", "workflow_id", "tenant_id", "causation_id", "correlation_id", "producer")


def clip(text: str, limit: int = MAX_ID_BYTES) -> str:
    """text, or when it is longer than limit bytes its head and a hash of the whole, so it stays traceable."""
    if len(text.encode()) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: limit // 4]}…[{len(text.encode())} bytes, sha256 {digest}]"


def envelope_problems(event: Event) -> list[str]:
    """What is wrong with an event's envelope (empty when it is well formed)."""
    env = event.envelope
    problems = [
        f"{name} is {len(value.encode())} bytes, over {MAX_ID_BYTES}"
        for name in _ID_FIELDS
        if (value := getattr(env, name)) is not None and len(value.encode()) > MAX_ID_BYTES
    ]
    problems += [
        f"{name} is empty"
        for name in ("event_id", "workflow_id", "tenant_id", "producer")
        if not getattr(env, name).strip()
    ]
    if env.step_seq < 0:
        problems.append(f"step_seq is {env.step_seq}, must be >= 0")
    if env.event_type and env.event_type != event.event_type:
        problems.append(f"event_type says {env.event_type!r} but the payload is a {event.event_type}")
    return problems


def misplaced(event: Event, topic: str) -> str | None:
    """Why an event does not belong on a topic, or None when it does."""
    allowed = topics.carries(topic)
    if not allowed or event.event_type in allowed:
        return None  # a topic Baton does not define (a test's, a user's) carries what its subscriber expects
    return f"{topic} carries {sorted(allowed)} only, not {event.event_type}: publish it to its own topic"


def unauthorized(event: Event, topic: str, role: str) -> str | None:
    """Why a role may not have produced this event on this topic, or None when the matrix allows it."""
    if not topics.carries(topic):
        return None  # a topic Baton does not define: any signer Baton knows
    if not topics.may_produce(role, topic, event.event_type):
        allowed = sorted(topics.producers(topic, event.event_type))
        return (
            f"{role} may not produce {event.event_type} on {topic}; only {allowed} may (see the producer matrix "
            "in docs/security.md): an event from another role is never acted on"
        )
    kind = identity.agent_kind(role)
    field_name = topics.ACTING_AGENT_FIELD.get(event.event_type)
    if kind is not None and field_name is not None and getattr(event, field_name) != kind:
        return (
            f"{role} signed a {event.event_type} whose {field_name} is {getattr(event, field_name)!r}: an agent "
            "speaks only for its own kind"
        )
    return None


class EventConsumer:
    """Bus handler that decodes, checks, calls the typed handler, and dead-letters what it cannot process.

    A record is dead-lettered once, with its reason, and the partition keeps moving: a record whose
    signature does not verify, undecodable bytes, an event from a role the producer matrix does not
    allow, an event type that does not belong on the topic, a malformed envelope, a handler's
    RejectedEvent, or a handler that keeps failing on it. An outage (the bus cannot acknowledge, the
    registry is down) is not the record's fault: it is raised, so the bus re-reads the record later.
    """

    def __init__(
        self,
        events: EventBus,
        *,
        group_id: str,
        handler: EventHandler,
        max_attempts: int = 3,
        retry_delay_s: float = 0.05,
        traced: bool = True,
    ) -> None:
        # traced=False: a fan-out reader whose handling publishes nothing (a feed every replica reads, a reply
        # matched by id) records no span; what it handles still joins the record's trace for its logs.
        self._traced = traced
        self._events = events
        self._group_id = group_id
        self._handler = handler
        self._max_attempts = max_attempts
        self._retry_delay_s = retry_delay_s
        self.dead_lettered = 0
        self.handled = 0

    async def __call__(self, record: BusRecord) -> None:
        """Handle one record inside its trace: a `process {topic}` span when tracing is on (the producer's
        span its parent), the record's trace context current either way (what the handler publishes and logs
        joins its trace)."""
        events = self._events
        parent = tracing.extract(record.headers)
        span: trace.Span | None = None
        if self._traced and tracing.enabled() and not tracing.sampled_out(parent):
            span = events.tracer.start_span(
                f"process {record.topic}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    tracing.MESSAGING_SYSTEM: "kafka",
                    tracing.MESSAGING_OPERATION_TYPE: "process",
                    tracing.MESSAGING_OPERATION_NAME: "process",
                    tracing.MESSAGING_DESTINATION: record.topic,
                    tracing.MESSAGING_PARTITION: str(record.partition),
                    tracing.MESSAGING_GROUP: self._group_id,
                    tracing.MESSAGING_OFFSET: record.offset,
                    tracing.MESSAGING_KEY: record.key.decode(errors="replace") if record.key else "",
                },
            )
            parent = trace.set_span_in_context(span, parent)
        token = otel_context.attach(parent)
        try:
            with tracing.serving(events.tracer), logs.about(None):
                await self._handle(record)
            self.handled += 1
            metrics.EVENTS_PROCESSED.labels(record.topic, self._group_id).inc()
        except BaseException as exc:
            if span is not None:
                tracing.failed(span, type(exc).__name__, str(exc))
            raise
        finally:
            otel_context.detach(token)
            if span is not None:
                span.end()

    async def _handle(self, record: BusRecord) -> None:
        try:
            role = self._events.authenticate(record)
        except AuthenticationError as exc:
            # Checked before decoding: bytes nobody vouches for are never parsed further.
            await self.dead_letter(record, exc.code, str(exc))
            return
        try:
            event = await self._events.serde.decode(record.value)
        except DecodeError as exc:
            if exc.transient:
                raise  # e.g. the registry is down: not the message's fault, so retry it, never park it
            await self.dead_letter(record, exc.code, str(exc))
            return
        except Exception as exc:  # a decoder bug must not wedge the partition either
            await self.dead_letter(record, "UNDECODABLE", f"{type(exc).__name__} while decoding: {exc}")
            return
        wrong_topic = misplaced(event, record.topic)
        if wrong_topic is not None:
            await self.dead_letter(record, "WRONG_TOPIC", wrong_topic, event)
            return
        problem = unauthorized(event, record.topic, role)
        if problem is not None:
            await self.dead_letter(record, "NOT_AUTHORIZED", problem, event)
            return
        env = event.envelope
        logs.set_workflow(env.workflow_id)
        current = trace.get_current_span()
        if current.is_recording():
            # The workflow id is the message key; tenant, step and context are on the GenAI spans.
            current.set_attributes({tracing.MESSAGING_MESSAGE_ID: env.event_id, "baton.event.type": event.event_type})
        problems = envelope_problems(event)
        if problems:
            await self.dead_letter(
                record, "BAD_ENVELOPE", f"{event.event_type} envelope is malformed: {'; '.join(problems)}", event
            )
            return
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._handler(event, record)
                return
            except RejectedEvent as exc:
                await self.dead_letter(record, exc.code, str(exc), event)
                return
            except TRANSIENT_ERRORS:
                raise
            except DecodeError as exc:
                if exc.transient:
                    raise
                await self.dead_letter(record, exc.code, str(exc), event)
                return
            except Exception as exc:
                if attempt == self._max_attempts:
                    log.exception("handler failed %d times on %s@%d", attempt, record.topic, record.offset)
                    await self.dead_letter(
                        record,
                        "HANDLER_FAILED",
                        f"{self._group_id} failed {attempt} times on this {event.event_type}: "
                        f"{type(exc).__name__}: {exc}; fix the cause and replay it from the dead-letter topic",
                        event,
                    )
                    return
                await asyncio.sleep(self._retry_delay_s * attempt)

    async def dead_letter(self, record: BusRecord, code: str, reason: str, event: Event | None = None) -> None:
        """Park a record on the dead-letter topic with its reason (id is stable, so a retry dedupes)."""
        log.warning("dead-lettering %s@%d/%d: %s: %s", record.topic, record.partition, record.offset, code, reason)
        metrics.DEAD_LETTERS.labels(record.topic, metrics.bounded("reason", code)).inc()
        tracing.failed(trace.get_current_span(), code, reason)
        trace.get_current_span().set_attribute("baton.dead_letter.reason", code)
        # Whatever the record carries is clipped: a dead letter must always fit on the bus.
        key = clip(record.key.decode(errors="replace")) if record.key else ""
        stable_id = stable_event_id("dlq", self._group_id, record.topic, record.partition, record.offset)
        env = event.envelope if event is not None else None
        envelope = Envelope(
            event_id=stable_id,
            workflow_id=clip(env.workflow_id if env and env.workflow_id else key) or "unknown",
            tenant_id=clip(env.tenant_id if env and env.tenant_id else "unknown"),
            step_seq=max(env.step_seq, 0) if env else 0,
            causation_id=clip(env.event_id) if env and env.event_id else None,
            correlation_id=clip(env.correlation_id if env and env.correlation_id else key) or "unknown",
            producer=self._events.producer,
        )
        reason = clip(reason, _REASON_LIMIT)
        payload = record.value
        if len(payload) > _DEAD_LETTER_PAYLOAD_LIMIT:
            # The record itself may be what is too large: park its head, the source offset locates the rest.
            reason += f" (payload cut to {_DEAD_LETTER_PAYLOAD_LIMIT} of {len(payload)} bytes; see the source offset)"
            payload = payload[:_DEAD_LETTER_PAYLOAD_LIMIT]
        source_key = record.key[:MAX_ID_BYTES] if record.key else record.key
        await self._events.publish(
            topics.DEAD_LETTER,
            DeadLettered(
                envelope=envelope,
                source_topic=record.topic,
                source_partition=record.partition,
                source_offset=record.offset,
                source_key=source_key,
                consumer_group=self._group_id,
                reason_code=code,
                reason=reason,
                payload=payload,
            ),
        )
        self.dead_lettered += 1


async def consume(
    events: EventBus,
    topics_: Sequence[str],
    *,
    group_id: str | None,
    handler: EventHandler,
    dlq_group: str | None = None,
    on_assign: PartitionsCallback | None = None,
    on_revoke: PartitionsCallback | None = None,
) -> tuple[Subscription, EventConsumer]:
    """Subscribe a typed handler to topics with checks and dead-lettering (rebalance hooks passed on)."""
    consumer = EventConsumer(events, group_id=group_id or dlq_group or "broadcast", handler=handler)
    sub = await events.bus.subscribe(
        topics_, group_id=group_id, handler=consumer, on_assign=on_assign, on_revoke=on_revoke
    )
    if group_id is not None:
        lag.watch(group_id, sub)
    return sub, consumer
