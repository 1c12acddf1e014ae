"""The handoff validator service, on the embedded bus and (integration) on the real Kafka broker."""

from __future__ import annotations

import pytest

from baton import topics
from baton.bus.base import Bus, BusRecord
from baton.context import context_sha256, make_snapshot
from baton.contracts.models import (
    DeadLettered,
    Envelope,
    Event,
    HandoffAccepted,
    HandoffProposed,
    HandoffRejected,
    HandoffRejectionCode,
    ToolProvenance,
    WorkflowCheckpointed,
)
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus, EventConsumer
from services.handoff_validator.app import start
from services.handoff_validator.config import Settings
from tests.harness.collect import Collector
from tests.harness.identities import events_as, publish_signed, trust

PROPOSER = "agent:identity_verification"

IDENTITY = {"verified": True, "method": "document_match"}


def _provenance(workflow_id: str) -> list[ToolProvenance]:
    """What identity_verification's runtime records for the identity its tool returned (no world configured)."""
    call_id = f"{workflow_id}:identity_verification:verify_identity:0"
    return [
        ToolProvenance(key="identity", tool="verify_identity", call_id=call_id, result_sha256=context_sha256(IDENTITY))
    ]


@pytest.fixture
def settings() -> Settings:
    return Settings(required_inputs={"document_verification": ["customer_id"]}, checkpoint_wait_s=10)


async def _listen(events: EventBus, topic: str, group: str) -> Collector[Event]:
    got: Collector[Event] = Collector()

    async def handle(event: Event, record: BusRecord) -> None:
        await got.add(event)

    await events.bus.subscribe([topic], group_id=group, handler=EventConsumer(events, group_id=group, handler=handle))
    return got


async def test_proposals_go_in_and_verdicts_come_out_and_garbage_is_dead_lettered(
    bus: Bus, serde: AvroSerde, settings: Settings, unique: str
) -> None:
    events = EventBus(bus=bus, serde=serde, producer="test", trust=trust("handoff-validator"))
    app = await start(events, settings)
    verdicts = await _listen(events, topics.HANDOFF_VERDICTS, f"verdicts.{unique}")
    dead = await _listen(events, topics.DEAD_LETTER, f"dlq.{unique}")

    wf = f"wf-{unique}"
    env = Envelope(workflow_id=wf, tenant_id="t1", producer="test")
    cp = make_snapshot({"customer_id": "c-1", "name": "Ada"}, version=1)
    await events_as("supervisor", bus, serde=serde).publish(
        topics.CHECKPOINTS,
        WorkflowCheckpointed(
            envelope=env,
            workflow_type="customer_onboarding",
            state="running",
            next_agent="identity_verification",
            snapshot=cp,
        ),
    )

    def propose(snapshot_ctx: dict[str, object], **kw: object) -> HandoffProposed:
        return HandoffProposed(
            envelope=env.model_copy(update={"event_id": f"{unique}-{len(verdicts.items)}-{kw.get('tag', '')}"}),
            from_agent="identity_verification",
            to_agent="document_verification",
            snapshot=make_snapshot(snapshot_ctx, version=2, parent=cp),
            provenance=_provenance(wf),
        )

    good = propose({"customer_id": "c-1", "name": "Ada", "identity": IDENTITY}, tag="good")
    await events_as(PROPOSER, bus, serde=serde).publish(topics.HANDOFF_PROPOSALS, good)
    await publish_signed(
        bus, PROPOSER, topics.HANDOFF_PROPOSALS, b"\x00\x00\x00\x00\x01garbage that claims schema id 1", key=wf.encode()
    )
    lost = propose({"identity": IDENTITY, "customer_id": "c-1"}, tag="lost")
    await events_as(PROPOSER, bus, serde=serde).publish(topics.HANDOFF_PROPOSALS, lost)
    tampered = propose({"customer_id": "c-1", "name": "Ada", "identity": IDENTITY}, tag="tampered")
    forged = tampered.snapshot.model_copy(update={"context_json": tampered.snapshot.context_json.replace("Ada", "Eve")})
    await events_as(PROPOSER, bus, serde=serde).publish(
        topics.HANDOFF_PROPOSALS, tampered.model_copy(update={"snapshot": forged})
    )

    mine = await verdicts.wait_until(lambda items: len([e for e in items if e.envelope.workflow_id == wf]) >= 3)
    mine = [e for e in mine if e.envelope.workflow_id == wf]
    assert isinstance(mine[0], HandoffAccepted)
    assert mine[0].diff.added == ["identity"]
    assert mine[0].envelope.causation_id == good.envelope.event_id
    assert isinstance(mine[1], HandoffRejected) and mine[1].reason_code == HandoffRejectionCode.CONTEXT_LOST
    assert isinstance(mine[2], HandoffRejected) and mine[2].reason_code == HandoffRejectionCode.HASH_MISMATCH

    assert mine[0].snapshot == good.snapshot

    parked = await dead.wait_until(
        lambda items: any(isinstance(e, DeadLettered) and e.source_key == wf.encode() for e in items)
    )
    [letter] = [e for e in parked if isinstance(e, DeadLettered) and e.source_key == wf.encode()]
    assert letter.consumer_group == topics.GROUP_HANDOFF_VALIDATOR
    assert letter.reason_code == "UNKNOWN_SCHEMA_ID"
    assert "schema id 1" in letter.reason
    assert app.handlers.accepted == 1 and app.handlers.rejected == 2
    await app.stop()


async def _identity_step_running(
    bus: Bus, serde: AvroSerde, unique: str
) -> tuple[WorkflowCheckpointed, HandoffProposed]:
    """A workflow whose identity_verification step runs (its checkpoint published), and the proposal that
    step honestly makes."""
    wf = f"wf-{unique}"
    env = Envelope(workflow_id=wf, tenant_id="t1", producer="test")
    cp = make_snapshot({"customer_id": "c-1"}, version=1)
    checkpoint = WorkflowCheckpointed(
        envelope=env,
        workflow_type="customer_onboarding",
        state="running",
        next_agent="identity_verification",
        snapshot=cp,
    )
    await events_as("supervisor", bus, serde=serde).publish(topics.CHECKPOINTS, checkpoint)
    proposal = HandoffProposed(
        envelope=env.model_copy(update={"event_id": f"p-{unique}"}),
        from_agent="identity_verification",
        to_agent="document_verification",
        snapshot=make_snapshot({"customer_id": "c-1", "identity": IDENTITY}, version=2, parent=cp),
        provenance=_provenance(wf),
    )
    return checkpoint, proposal


async def test_a_redelivered_proposal_gets_the_same_verdict(
    bus: Bus, serde: AvroSerde, settings: Settings, unique: str
) -> None:
    events = EventBus(bus=bus, serde=serde, producer="test", trust=trust("handoff-validator"))
    app = await start(events, settings)
    verdicts = await _listen(events, topics.HANDOFF_VERDICTS, f"verdicts.{unique}")
    checkpoint, proposal = await _identity_step_running(bus, serde, unique)
    wf, cp = checkpoint.envelope.workflow_id, checkpoint.snapshot
    await events_as(PROPOSER, bus, serde=serde).publish(topics.HANDOFF_PROPOSALS, proposal)
    await verdicts.wait_until(lambda items: any(e.envelope.workflow_id == wf for e in items))
    # the workflow moves on, then the old proposal is redelivered: its verdict must not change
    later = make_snapshot({"customer_id": "c-1", "identity": IDENTITY}, version=2, parent=cp)
    await events_as("supervisor", bus, serde=serde).publish(
        topics.CHECKPOINTS,
        checkpoint.model_copy(update={"snapshot": make_snapshot({"x": 1}, version=3, parent=later)}),
    )
    await events_as(PROPOSER, bus, serde=serde).publish(topics.HANDOFF_PROPOSALS, proposal)
    mine = await verdicts.wait_until(lambda items: len([e for e in items if e.envelope.workflow_id == wf]) >= 2)
    first, second = [e for e in mine if e.envelope.workflow_id == wf][:2]
    assert isinstance(first, HandoffAccepted) and first == second
    await app.stop()


async def test_an_agent_reusing_a_genuine_proposals_id_does_not_get_its_verdict_answered_for_it(
    bus: Bus, serde: AvroSerde, settings: Settings, unique: str
) -> None:
    # Proposal ids are predictable; an agent that sends one first must not make the genuine proposal
    # receive the impostor's (rejected) verdict, which would stall the workflow.
    events = EventBus(bus=bus, serde=serde, producer="test", trust=trust("handoff-validator"))
    app = await start(events, settings)
    verdicts = await _listen(events, topics.HANDOFF_VERDICTS, f"verdicts.{unique}")
    _checkpoint, genuine = await _identity_step_running(bus, serde, unique)
    wf = genuine.envelope.workflow_id
    impostor = genuine.model_copy(update={"from_agent": "compliance_check"})
    await events_as("agent:compliance_check", bus, serde=serde).publish(topics.HANDOFF_PROPOSALS, impostor)
    await events_as(PROPOSER, bus, serde=serde).publish(topics.HANDOFF_PROPOSALS, genuine)
    mine = await verdicts.wait_until(lambda items: len([e for e in items if e.envelope.workflow_id == wf]) >= 2)
    first, second = [e for e in mine if e.envelope.workflow_id == wf][:2]
    assert isinstance(first, HandoffRejected) and first.from_agent == "compliance_check"
    assert isinstance(second, HandoffAccepted) and second.from_agent == "identity_verification"
    assert first.envelope.event_id != second.envelope.event_id
    await app.stop()


async def test_proposals_of_unknown_workflows_do_not_hold_up_the_others(
    bus: Bus, serde: AvroSerde, unique: str
) -> None:
    # A fixed wait per unknown workflow would take 4 x 120 s here; the validator answers as soon as its
    # checkpoint feed has read up to the moment the proposal arrived.
    events = EventBus(bus=bus, serde=serde, producer="test", trust=trust("handoff-validator"))
    app = await start(events, Settings(checkpoint_wait_s=120))
    verdicts = await _listen(events, topics.HANDOFF_VERDICTS, f"verdicts.{unique}")
    ghosts = [f"ghost-{unique}-{i}" for i in range(4)]
    real = f"wf-{unique}"
    parent = make_snapshot({"customer_id": "c-1"}, version=1)
    for wf in ghosts:
        await events_as(PROPOSER, bus, serde=serde).publish(
            topics.HANDOFF_PROPOSALS,
            HandoffProposed(
                envelope=Envelope(workflow_id=wf, tenant_id="t1", producer="test"),
                from_agent="identity_verification",
                to_agent="document_verification",
                snapshot=make_snapshot({"customer_id": "c-1", "identity": IDENTITY}, version=2, parent=parent),
                provenance=_provenance(wf),
            ),
        )
    env = Envelope(workflow_id=real, tenant_id="t1", producer="test")
    await events_as("supervisor", bus, serde=serde).publish(
        topics.CHECKPOINTS,
        WorkflowCheckpointed(
            envelope=env,
            workflow_type="customer_onboarding",
            state="running",
            next_agent="identity_verification",
            snapshot=parent,
        ),
    )
    await events_as(PROPOSER, bus, serde=serde).publish(
        topics.HANDOFF_PROPOSALS,
        HandoffProposed(
            envelope=env,
            from_agent="identity_verification",
            to_agent="document_verification",
            snapshot=make_snapshot({"customer_id": "c-1", "identity": IDENTITY}, version=2, parent=parent),
            provenance=_provenance(real),
        ),
    )
    mine = {*ghosts, real}
    got = await verdicts.wait_until(lambda items: {e.envelope.workflow_id for e in items} >= mine, within=30)
    by_wf = {e.envelope.workflow_id: e for e in got if e.envelope.workflow_id in mine}
    assert isinstance(by_wf[real], HandoffAccepted)
    for wf in ghosts:
        verdict = by_wf[wf]
        assert isinstance(verdict, HandoffRejected) and verdict.reason_code == HandoffRejectionCode.STALE
        assert "no checkpoint is known" in verdict.reason
    await app.stop()


async def test_on_kafka_the_validator_refuses_to_run_without_tool_receipts_unless_told(serde: AvroSerde) -> None:
    from baton.bus.embedded import EmbeddedBus
    from baton.runtime import RuntimeSettings, ServiceConfigError

    bus = EmbeddedBus(partitions=1)
    events = EventBus(bus=bus, serde=serde, producer="test", trust=trust("handoff-validator"))
    with pytest.raises(ServiceConfigError, match="BATON_HANDOFF_VALIDATOR_LEDGER_DB"):
        await start(events, Settings(runtime=RuntimeSettings(bus="kafka")))
    app = await start(events, Settings(runtime=RuntimeSettings(bus="kafka"), without_tool_receipts=True))
    await app.stop()
    await bus.stop()
