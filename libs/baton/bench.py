"""`make bench`: what Baton's layers cost, each as a ratio against a baseline measured in the same run.

Timings alternate A and B and report medians of several repetitions, so a noisy shared machine
moves both sides alike; no test asserts a timing.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.context import make_snapshot
from baton.contracts.models import Envelope, HandoffProposed
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.identity import TrustDomain
from baton.messaging import EventBus, unauthorized


@dataclass(frozen=True)
class Comparison:
    """One figure: Baton's rate against its baseline's, both in operations per second (medians)."""

    what: str
    baton_per_s: float
    baseline_per_s: float
    baseline: str

    @property
    def ratio(self) -> float:
        return self.baton_per_s / self.baseline_per_s

    def row(self) -> str:
        return (
            f"| {self.what} | {self.baton_per_s:,.0f} /s | {self.baseline}: {self.baseline_per_s:,.0f} /s "
            f"| {self.ratio:.2f}x |"
        )


async def _rate(n: int, one: Callable[[int], Awaitable[None]]) -> float:
    started = time.perf_counter()
    for i in range(n):
        await one(i)
    return n / (time.perf_counter() - started)


async def _compare(
    what: str,
    baseline: str,
    n: int,
    reps: int,
    a: Callable[[int], Awaitable[None]],
    b: Callable[[int], Awaitable[None]],
) -> Comparison:
    baton, base = [], []
    for _ in range(reps):
        baton.append(await _rate(n, a))
        base.append(await _rate(n, b))
    return Comparison(what, statistics.median(baton), statistics.median(base), baseline)


async def signing_cost(*, events: int = 5_000, reps: int = 3) -> list[Comparison]:
    """Per-event cost of signing (produce side) and verifying + authorizing (consume side), 2 KB contexts."""
    serde = AvroSerde(LocalSchemaRegistry())
    domain = TrustDomain.generate([identity.agent_role("bench"), identity.HANDOFF_VALIDATOR])
    agent = domain.identities[identity.agent_role("bench")]
    proposals = [
        HandoffProposed(
            envelope=Envelope(workflow_id=f"wf-{i}", tenant_id="t", producer="bench"),
            from_agent="bench",
            to_agent="next",
            snapshot=make_snapshot({"customer_id": f"c-{i}", "notes": "x" * 2000}, version=2),
        )
        for i in range(events)
    ]
    encoded = [await serde.encode(p) for p in proposals]
    records = [
        BusRecord(
            topics.HANDOFF_PROPOSALS,
            0,
            i,
            f"wf-{i}".encode(),
            data,
            headers=(
                (identity.SIGNER_HEADER, agent.key_id.encode()),
                (
                    identity.SIGNATURE_HEADER,
                    agent.sign(identity.signed_message(topics.HANDOFF_PROPOSALS, f"wf-{i}".encode(), data)),
                ),
            ),
        )
        for i, data in enumerate(encoded)
    ]

    async def encode_and_sign(i: int) -> None:
        data = await serde.encode(proposals[i])
        agent.sign(identity.signed_message(topics.HANDOFF_PROPOSALS, records[i].key, data))

    async def encode(i: int) -> None:
        await serde.encode(proposals[i])

    validator = EventBus(
        bus=EmbeddedBus(), serde=serde, producer="bench", trust=domain.trust(identity.HANDOFF_VALIDATOR)
    )

    async def verify_and_decode(i: int) -> None:
        event = await serde.decode(records[i].value)
        assert unauthorized(event, records[i].topic, validator.authenticate(records[i])) is None

    async def decode(i: int) -> None:
        await serde.decode(records[i].value)

    return [
        await _compare("encode + sign a 2 KB proposal", "encode only", events, reps, encode_and_sign, encode),
        await _compare(
            "verify + authorize + decode a 2 KB proposal", "decode only", events, reps, verify_and_decode, decode
        ),
    ]


def report(comparisons: list[Comparison]) -> str:
    rows = ["| what | Baton | baseline | ratio |", "|---|---|---|---|", *(c.row() for c in comparisons)]
    return "\n".join(rows)


def run_all(*, events: int, reps: int) -> str:
    """Every benchmark, as the Markdown report `make bench` writes."""
    figures = asyncio.run(signing_cost(events=events, reps=reps))
    return (
        f"## Authenticated events (Ed25519 per event)\n\nMedians of {reps} alternating runs of {events:,} events, "
        "in one process, on records in memory.\n\n" + report(figures) + "\n"
    )
