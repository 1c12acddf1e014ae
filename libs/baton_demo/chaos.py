"""Infrastructure faults for tests and chaos runs: a bus whose publishes fail, and poison records of every kind."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from baton import identity, topics
from baton.bus.base import Bus, BusUnavailableError, Handler, Headers, Subscription
from baton.context import make_snapshot
from baton.contracts.models import (
    ContextDiff,
    DeadLettered,
    Envelope,
    Event,
    HandoffAccepted,
    HandoffProposed,
    StepCompleted,
    StepRequested,
    TaskRequested,
    WorkflowCheckpointed,
    WorkflowCompleted,
    WorkflowHalted,
)
from baton.contracts.serde import AvroSerde
from baton.identity import Identity, TrustDomain


class FlakyBus:
    """A bus whose publishes fail at a seeded rate, as a broker timing out or a registry outage would.

    A failed publish wrote nothing; everything else is passed to the wrapped bus.
    """

    def __init__(self, inner: Bus, *, failure_rate: float, seed: int = 0, only: Collection[str] = ()) -> None:
        self.inner = inner
        self.failure_rate = failure_rate
        self.only = frozenset(only)  # fail publishes to these topics only (all when empty)
        self._random = random.Random(seed)
        self.failed = 0
        self.published = 0
        self.a_publish_failed = asyncio.Event()

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def create_topics(
        self, topics_: Sequence[str], *, partitions: int | None = None, compacted: bool = False
    ) -> None:
        await self.inner.create_topics(topics_, partitions=partitions, compacted=compacted)

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()) -> None:
        if self.failure_rate and (not self.only or topic in self.only) and self._random.random() < self.failure_rate:
            self.failed += 1
            self.a_publish_failed.set()
            raise BusUnavailableError(f"injected: publish to {topic} not acknowledged")
        await self.inner.publish(topic, value, key=key, headers=headers)
        self.published += 1

    async def replay(
        self, topics_: Sequence[str], handler: Handler, *, partitions: Collection[int] | None = None
    ) -> int:
        return await self.inner.replay(topics_, handler, partitions=partitions)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return await self.inner.end_offsets(topic)

    async def subscribe_batches(self, *args: Any, **options: Any) -> Subscription:
        return await self.inner.subscribe_batches(*args, **options)

    async def subscribe(self, *args: Any, **options: Any) -> Subscription:
        return await self.inner.subscribe(*args, **options)


def consumed_topics(agent_kinds: Collection[str]) -> list[str]:
    """Every topic a Baton service consumes with a typed handler (the outcomes topic is the client's)."""
    return [
        topics.TASKS,
        topics.STEP_RESULTS,
        topics.HANDOFF_VERDICTS,
        topics.HANDOFF_PROPOSALS,
        topics.CHECKPOINTS,
        *(topics.agent_steps(k) for k in sorted(agent_kinds)),
    ]


@dataclass(frozen=True)
class Poison:
    """One malformed record: where it goes, what it is, and the reason code a consumer must give it."""

    name: str
    topic: str
    key: bytes | None
    value: bytes
    expect: str | None  # dead-letter reason code; None: consumed without a dead letter (e.g. skipped, ignored)
    headers: Headers = ()


def _envelope(workflow_id: str, **changes: object) -> Envelope:
    return Envelope(workflow_id=workflow_id, tenant_id="tenant-poison", producer="chaos").model_copy(update=changes)


def _sign(signer: Identity, topic: str, key: bytes | None, value: bytes) -> Headers:
    message = identity.signed_message(topic, key, value)
    return ((identity.SIGNER_HEADER, signer.key_id.encode()), (identity.SIGNATURE_HEADER, signer.sign(message)))


def _legitimate_producer(topic: str, trust: TrustDomain) -> Identity:
    """An identity the producer matrix allows on this topic: an insider whose bytes are still bad."""
    roles = sorted(set().union(*(topics.producers(topic, t) for t in topics.carries(topic))))
    agents = sorted(r for r in trust.identities if identity.agent_kind(r) is not None)
    named = [r for r in roles if r != topics.ANY_AGENT]
    role = named[0] if named else agents[0]
    return trust.identities[role]


async def _typical_events(serde: AvroSerde) -> dict[str, Event]:
    """One well-formed event of each type a consumed topic carries (what a forger would send)."""
    snap = make_snapshot({"ticket_id": "tkt-forged"}, version=1)
    env = _envelope("poison-forged")
    return {
        "TaskRequested": TaskRequested(
            envelope=env, workflow_type="support_refund", input_json="{}", requested_by="chaos"
        ),
        "StepCompleted": StepCompleted(envelope=env, agent="ticket_lookup", succeeded=True),
        "HandoffAccepted": HandoffAccepted(
            envelope=env, from_agent="ticket_lookup", to_agent="refund_preview", snapshot=snap, diff=ContextDiff()
        ),
        "HandoffProposed": HandoffProposed(
            envelope=env, from_agent="ticket_lookup", to_agent="refund_preview", snapshot=snap
        ),
        "WorkflowCheckpointed": WorkflowCheckpointed(
            envelope=env, workflow_type="support_refund", state="running", snapshot=snap
        ),
        "StepRequested": StepRequested(envelope=env, agent="ticket_lookup", attempt=1, snapshot=snap),
        "WorkflowCompleted": WorkflowCompleted(envelope=env, workflow_type="support_refund", snapshot=snap, steps=1),
    }


def _forgeries(topic: str, event: Event, value: bytes, trust: TrustDomain) -> list[tuple[str, Headers, str]]:
    """The ways an attacker who can write to the bus forges this event, each with its dead-letter code."""
    legit = _legitimate_producer(topic, trust)
    stranger = Identity.generate(legit.role)  # same role name, a key nobody distributed
    wrong_roles = [r for r in sorted(trust.identities) if not topics.may_produce(r, topic, event.event_type)]
    # Prefer a role that is near: an agent forging a supervisor's event, a client forging an agent's.
    forger = trust.identities[next((r for r in wrong_roles if r.startswith("agent:")), wrong_roles[0])]
    key = b"poison-forged"
    out = [
        ("unsigned", (), "UNSIGNED"),
        ("signed by a key not in the keyring", _sign(stranger, topic, key, value), "UNKNOWN_SIGNER"),
        ("signature made for another topic", _sign(legit, topics.DEAD_LETTER, key, value), "BAD_SIGNATURE"),
        (f"{event.event_type} forged by {forger.role}", _sign(forger, topic, key, value), "NOT_AUTHORIZED"),
    ]
    kind_field = topics.ACTING_AGENT_FIELD.get(event.event_type)
    if kind_field is not None:
        other = next(
            i for r, i in sorted(trust.identities.items()) if identity.agent_kind(r) not in (None, "ticket_lookup")
        )
        out.append((f"{other.role} speaking for ticket_lookup", _sign(other, topic, key, value), "NOT_AUTHORIZED"))
    return out


async def poison_records(serde: AvroSerde, consumed: Sequence[str], trust: TrustDomain) -> list[Poison]:
    """Malformed and forged records of every kind for every topic in `consumed`, each with the reason it must get.

    Malformed bytes are signed by an identity allowed on the topic (an insider's garbage must still not
    wedge a consumer); forged events are unsigned, signed by an unknown key, signed for another topic,
    or signed by a role the producer matrix does not allow there.
    """
    task = TaskRequested(
        envelope=_envelope("poison-task"), workflow_type="support_refund", input_json="{}", requested_by="chaos"
    )
    valid_task = await serde.encode(task)
    schema_id = struct.unpack_from(">I", valid_task, 1)[0]
    raw: list[tuple[str, bytes | None, bytes, str]] = [
        ("empty", b"poison", b"", "TOO_SHORT"),
        ("three bytes", b"poison", b"\x00\x01\x02", "TOO_SHORT"),
        ("bad magic byte", b"poison", b"\x07" + valid_task[1:], "BAD_MAGIC_BYTE"),
        ("unknown schema id", b"poison", struct.pack(">bI", 0, 0x7FFFFFF0) + b"\x02xy", "UNKNOWN_SCHEMA_ID"),
        ("corrupt avro body", b"poison", struct.pack(">bI", 0, schema_id) + b"\xff" * 9, "AVRO_DECODE"),
        ("trailing bytes", b"poison", valid_task + b"\x00\x00junk", "TRAILING_BYTES"),
        ("non-UTF-8 key, no payload", b"\xff\xfe\x80", b"\x00", "TOO_SHORT"),
        ("no key, random bytes", None, bytes(random.Random(5).randrange(256) for _ in range(64)), "BAD_MAGIC_BYTE"),
    ]
    out: list[Poison] = []
    for topic in consumed:
        for name, key, value, code in raw:
            out.append(Poison(f"{name} on {topic}", topic, key, value, code))
        wrong = TaskRequested if topic != topics.TASKS else StepCompleted
        if wrong is TaskRequested:
            value = valid_task
        else:
            value = await serde.encode(StepCompleted(envelope=_envelope("poison-wrong"), agent="x", succeeded=True))
        out.append(Poison(f"{wrong.__name__} on {topic}", topic, b"poison-wrong", value, "WRONG_TOPIC"))
    bad_envelopes = {
        "empty tenant": _envelope("poison-env-1", tenant_id=""),
        "negative step": _envelope("poison-env-2", step_seq=-4),
        "empty workflow id": _envelope(""),
    }
    for name, envelope in bad_envelopes.items():
        value = await serde.encode(task.model_copy(update={"envelope": envelope}))
        out.append(Poison(f"{name} on {topics.TASKS}", topics.TASKS, b"poison-env", value, "BAD_ENVELOPE"))
    unknown = StepCompleted(envelope=_envelope("poison-never-started"), agent="ticket_lookup", succeeded=True)
    out.append(
        Poison(
            "result of a workflow never started",
            topics.STEP_RESULTS,
            b"poison-never-started",
            await serde.encode(unknown),
            "UNKNOWN_WORKFLOW",
        )
    )
    snap = make_snapshot({"a": 1}, version=2)
    verdict = HandoffAccepted(
        envelope=_envelope("poison-never-started"),
        from_agent="a",
        to_agent="b",
        snapshot=snap,
        diff=ContextDiff(added=["a"]),
    )
    out.append(
        Poison(
            "verdict of a workflow never started",
            topics.HANDOFF_VERDICTS,
            b"poison-never-started",
            await serde.encode(verdict),
            "UNKNOWN_WORKFLOW",
        )
    )
    bad_state = WorkflowCheckpointed(
        envelope=_envelope("poison-checkpoint"),
        workflow_type="support_refund",
        state="completed",
        snapshot=snap,
        supervisor_state_json=json.dumps({"nonsense": True}),
    )
    out.append(
        Poison(
            "checkpoint whose state does not parse",
            topics.CHECKPOINTS,
            b"poison-checkpoint",
            await serde.encode(bad_state),
            None,
        )
    )
    parked = DeadLettered(
        envelope=_envelope("poison-dlq"),
        source_topic=topics.TASKS,
        source_partition=0,
        source_offset=0,
        source_key=b"\xff\xfe",
        consumer_group="chaos",
        reason_code="X",
        reason="non-UTF-8 payload",
        payload=b"\x00\xff\xfe\xfd",
    )
    out.append(
        Poison("dead letter with non-UTF-8 bytes", topics.DEAD_LETTER, b"\xff\xfe", await serde.encode(parked), None)
    )
    typical = await _typical_events(serde)
    for topic in consumed:
        event = typical[next(t for t in sorted(topics.carries(topic)) if t in typical)]
        if isinstance(event, StepRequested) and topic != topics.agent_steps(event.agent):
            event = event.model_copy(update={"agent": topic.split(".")[2]})
        value = await serde.encode(event)
        for name, headers, code in _forgeries(topic, event, value, trust):
            out.append(Poison(f"{name} on {topic}", topic, b"poison-forged", value, code, headers))
    signed = [
        p if p.headers or p.expect in _UNSIGNED_CODES else _signed_by_insider(p, trust)
        for p in out
        if p.topic in consumed or p.topic == topics.DEAD_LETTER
    ]
    return signed


_UNSIGNED_CODES = frozenset({"UNSIGNED"})


def _signed_by_insider(poison: Poison, trust: TrustDomain) -> Poison:
    signer = _legitimate_producer(poison.topic, trust)
    if poison.topic == topics.STEP_RESULTS:
        signer = trust.identities[identity.agent_role("ticket_lookup")]  # the agent the poison result names
    return Poison(
        poison.name,
        poison.topic,
        poison.key,
        poison.value,
        poison.expect,
        _sign(signer, poison.topic, poison.key, poison.value),
    )


async def forged_outcome(serde: AvroSerde, trust: TrustDomain, *, workflow_id: str, workflow_type: str) -> Poison:
    """A halt of a live workflow, signed by an agent: what an upstream system must never be told."""
    halted = WorkflowHalted(
        envelope=_envelope(workflow_id, tenant_id="tenant-0"),
        workflow_type=workflow_type,
        reason_code="FORGED",
        reason="an agent posing as the supervisor",
    )
    value = await serde.encode(halted)
    key = workflow_id.encode()
    signer = trust.identities[identity.agent_role("ticket_lookup")]
    return Poison(
        f"forged halt of {workflow_id}",
        topics.OUTCOMES,
        key,
        value,
        "NOT_AUTHORIZED",
        _sign(signer, topics.OUTCOMES, key, value),
    )
