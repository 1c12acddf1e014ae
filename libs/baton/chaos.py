"""Infrastructure faults for tests and chaos runs: a bus whose publishes fail, and poison records of every kind."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from baton import topics
from baton.bus.base import Bus, BusUnavailableError, Handler, Headers, Subscription
from baton.context import make_snapshot
from baton.contracts.models import (
    ContextDiff,
    DeadLettered,
    Envelope,
    HandoffAccepted,
    StepCompleted,
    TaskRequested,
    WorkflowCheckpointed,
)
from baton.contracts.serde import AvroSerde


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


def _envelope(workflow_id: str, **changes: object) -> Envelope:
    return Envelope(workflow_id=workflow_id, tenant_id="tenant-poison", producer="chaos").model_copy(update=changes)


async def poison_records(serde: AvroSerde, consumed: Sequence[str]) -> list[Poison]:
    """Malformed records of every kind for every topic in `consumed`, each with the reason it must get."""
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
    return [p for p in out if p.topic in consumed or p.topic == topics.DEAD_LETTER]
