"""What signing costs: Ed25519 per event on both sides, against encoding and decoding alone (one figure of
`make bench`, see baton_demo.perf)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.context import make_snapshot
from baton.contracts.models import Envelope, HandoffProposed
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.identity import TrustDomain
from baton.messaging import EventBus, unauthorized
from baton_demo.perf.stats import Comparison, alternate


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

    def rate(one: Callable[[int], Awaitable[None]]) -> Callable[[int], Awaitable[float]]:
        async def run(_rep: int) -> float:
            started = time.perf_counter()
            for i in range(events):
                await one(i)
            return events / (time.perf_counter() - started)

        return run

    sign = Comparison("signing", "encode + sign a 2 KB proposal", "encode only", "events/s", True)
    verify = Comparison("verifying", "verify + authorize + decode a 2 KB proposal", "decode only", "events/s", True)
    return [
        await alternate(sign, reps, rate(encode_and_sign), rate(encode)),
        await alternate(verify, reps, rate(verify_and_decode), rate(decode)),
    ]
