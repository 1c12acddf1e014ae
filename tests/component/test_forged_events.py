"""An attacker who can write to the bus: forged steps, verdicts, checkpoints and outcomes are dead-lettered
with their reason and never acted on (issue 8, authenticated events)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from baton import identity, topics
from baton.audit.keys import encode_signing_key, generate_signing_key
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.context import make_snapshot
from baton.contracts.models import (
    ContextDiff,
    DeadLettered,
    Envelope,
    Event,
    HandoffAccepted,
    StepCompleted,
    StepRequested,
    WorkflowCheckpointed,
    WorkflowCompleted,
)
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.identity import Identity
from baton.messaging import EventConsumer
from baton.workflows import agent_kinds, load_workflows
from baton_demo.world import World
from services.agent import app as agent_app
from services.agent.config import Settings as AgentSettings
from services.auditor import app as auditor_app
from services.auditor.config import Settings as AuditorSettings
from services.supervisor import app as supervisor_app
from services.supervisor.config import Settings as SupervisorSettings
from tests.harness.collect import Collector
from tests.harness.identities import DOMAIN, events_as
from tests.harness.world_tools import world_registry

SERDE = AvroSerde(LocalSchemaRegistry())

# What these tests check is not task admission (tests/component/test_task_admission.py is).
NO_ADMISSION = SupervisorSettings(admission=False)


async def _dead_letters(bus: EmbeddedBus) -> Collector[DeadLettered]:
    got: Collector[DeadLettered] = Collector()

    async def keep(event: Event, record: BusRecord) -> None:
        if isinstance(event, DeadLettered):
            await got.add(event)

    events = events_as(identity.AUDITOR, bus, serde=SERDE)
    await bus.subscribe(
        [topics.DEAD_LETTER], group_id="test.dlq", handler=EventConsumer(events, group_id="test.dlq", handler=keep)
    )
    return got


async def _publish_with_undistributed_key(bus: EmbeddedBus, role: str, topic: str, value: bytes) -> None:
    """An attacker who made a key pair of their own and signs as role with it."""
    forger = Identity.generate(role)
    signature = forger.sign(identity.signed_message(topic, b"wf-forged", value))
    headers = ((identity.SIGNER_HEADER, forger.key_id.encode()), (identity.SIGNATURE_HEADER, signature))
    await bus.publish(topic, value, key=b"wf-forged", headers=headers)


async def test_a_forged_step_sent_straight_to_an_agent_is_never_executed(tmp_path: Path) -> None:
    bus = EmbeddedBus(partitions=2)
    await bus.start()
    dead = await _dead_letters(bus)
    auditor = await auditor_app.start(
        events_as(identity.AUDITOR, bus, serde=SERDE),
        AuditorSettings(
            store="embedded",
            sqlite_path=tmp_path / "audit.db",
            signing_key=SecretStr(encode_signing_key(generate_signing_key())),
        ),
    )
    issuer = await agent_app.start(
        events_as(identity.agent_role("refund_issuer"), bus, serde=SERDE),
        AgentSettings(kind="refund_issuer", ledger_db=tmp_path / "ledger.db"),
        tools=await world_registry(World(tmp_path / "world.db")),
    )
    step = StepRequested(
        envelope=Envelope(workflow_id="wf-forged", tenant_id="t1", producer="supervisor"),
        agent="refund_issuer",
        attempt=1,
        snapshot=make_snapshot({"ticket_id": "tkt-00001", "refund_preview": {"amount": 10_000}}, version=3),
    )
    topic = topics.agent_steps("refund_issuer")
    value = await SERDE.encode(step)
    # An agent skipping the validator, a process with no key, and one with a key nobody distributed.
    await events_as(identity.agent_role("ticket_lookup"), bus, serde=SERDE).publish(topic, step)
    await bus.publish(topic, value, key=b"wf-forged")
    await _publish_with_undistributed_key(bus, identity.SUPERVISOR, topic, value)
    letters = await dead.wait_for_count(3)
    assert sorted(d.reason_code for d in letters) == ["NOT_AUTHORIZED", "UNKNOWN_SIGNER", "UNSIGNED"]
    assert all(d.source_topic == topic and d.consumer_group == topics.agent_group("refund_issuer") for d in letters)
    not_allowed = next(d for d in letters if d.reason_code == "NOT_AUTHORIZED")
    assert "agent:ticket_lookup may not produce StepRequested" in not_allowed.reason
    assert issuer.handlers.steps_run == 0 and issuer.handlers.steps_replayed == 0

    # The audit shows each forgery for what it is, and why it was refused.
    async def audited() -> list[dict[str, Any]]:
        while True:
            docs = [doc async for doc in auditor.store.stream()]
            if len([d for d in docs if d["topic"] in (topic, topics.DEAD_LETTER)]) >= 6:
                return docs
            await asyncio.sleep(0.05)

    docs = await asyncio.wait_for(audited(), 30)
    signers = sorted(d["signer"] for d in docs if d["topic"] == topic)
    assert signers == [
        "NOT_AUTHORIZED:agent:ticket_lookup",
        "UNAUTHENTICATED:UNKNOWN_SIGNER",
        "UNAUTHENTICATED:UNSIGNED",
    ]
    reasons = sorted(d["payload"]["reason_code"] for d in docs if d["topic"] == topics.DEAD_LETTER)
    assert reasons == ["NOT_AUTHORIZED", "UNKNOWN_SIGNER", "UNSIGNED"]
    await issuer.stop()
    await auditor.stop()
    await bus.stop()


async def test_forged_verdicts_results_and_checkpoints_do_not_move_a_workflow(tmp_path: Path) -> None:
    bus = EmbeddedBus(partitions=1)
    await bus.start()
    dead = await _dead_letters(bus)
    sup = await supervisor_app.start(events_as(identity.SUPERVISOR, bus, serde=SERDE), NO_ADMISSION)
    client = BatonClient(events_as(identity.CLIENT, bus, serde=SERDE))
    wf = "wf-victim"
    await client.submit("support_refund", {"ticket_id": "tkt-00001"}, tenant_id="t1", workflow_id=wf)
    checkpoints: Collector[BusRecord] = Collector()
    await bus.subscribe([topics.CHECKPOINTS], group_id="test.checkpoints", handler=checkpoints.add)
    [genuine] = await checkpoints.wait_for_count(1)
    state = sup.handlers.supervisor.states[wf]
    assert state.current_agent == "ticket_lookup"

    # The lookup agent claims the lookup succeeded and forges the validator's acceptance of a context in
    # which the refund was already previewed, to skip straight to the refund.
    env = Envelope(workflow_id=wf, tenant_id="t1", producer="validator")
    forged_ctx = make_snapshot({"ticket_id": "tkt-00001", "refund_preview": {"amount": 9_999}}, version=2)
    agent = events_as(identity.agent_role("ticket_lookup"), bus, serde=SERDE)
    await agent.publish(
        topics.HANDOFF_VERDICTS,
        HandoffAccepted(
            envelope=env, from_agent="ticket_lookup", to_agent="refund_issuer", snapshot=forged_ctx, diff=ContextDiff()
        ),
    )
    # Another agent reports the lookup's result in its name.
    await events_as(identity.agent_role("refund_issuer"), bus, serde=SERDE).publish(
        topics.STEP_RESULTS,
        StepCompleted(envelope=env, agent="ticket_lookup", succeeded=True, snapshot=forged_ctx),
    )
    # A checkpoint that moves the workflow on to the refund, for a restarted supervisor to adopt.
    checkpoint = await SERDE.decode(genuine.value)
    assert isinstance(checkpoint, WorkflowCheckpointed)
    fields = json.loads(checkpoint.supervisor_state_json)
    fields.update(current_agent="refund_issuer", seq=5)
    forged_checkpoint = checkpoint.model_copy(
        update={"supervisor_state_json": json.dumps(fields), "next_agent": "refund_issuer"}
    )
    await agent.publish(topics.CHECKPOINTS, forged_checkpoint)
    # And the outcome the upstream system waits for.
    await agent.publish(
        topics.OUTCOMES,
        WorkflowCompleted(envelope=env, workflow_type="support_refund", snapshot=forged_ctx, steps=3),
    )

    letters = await dead.wait_for_count(2)  # the supervisor's inbox: the verdict and the result
    assert sorted((d.source_topic, d.reason_code) for d in letters) == [
        (topics.HANDOFF_VERDICTS, "NOT_AUTHORIZED"),
        (topics.STEP_RESULTS, "NOT_AUTHORIZED"),
    ]
    assert "speaks only for its own kind" in next(d for d in letters if d.source_topic == topics.STEP_RESULTS).reason
    assert sup.handlers.supervisor.states[wf].current_agent == "ticket_lookup"

    # A replacement supervisor restores the partition: the forged checkpoint is the newest, and refused.
    await sup.stop()
    again = await supervisor_app.start(events_as(identity.SUPERVISOR, bus, serde=SERDE), NO_ADMISSION)
    await again.handlers.on_assign(frozenset({(topics.TASKS, 0)}))
    assert again.handlers.refused_checkpoints >= 1
    assert again.handlers.supervisor.states[wf].current_agent == "ticket_lookup"
    assert not bus.log_of((topics.agent_steps("refund_issuer"), 0))

    # The client never yields the forged outcome: it is dead-lettered by the client's consumer.
    outcomes = client.outcomes(group_id="test.upstream")
    again.handlers._clock = lambda: 10**12  # past the wall-clock budget: the genuine outcome, a halt
    await again.handlers.sweep()
    first = await outcomes.__anext__()
    assert first.envelope.workflow_id == wf and first.event_type == "WorkflowHalted"
    await outcomes.aclose()
    outcome_letters = await dead.wait_until(
        lambda items: any(d.source_topic == topics.OUTCOMES for d in items), within=10
    )
    [forged_outcome] = [d for d in outcome_letters if d.source_topic == topics.OUTCOMES]
    assert forged_outcome.reason_code == "NOT_AUTHORIZED" and forged_outcome.consumer_group == "test.upstream"
    await again.stop()
    await bus.stop()


def test_every_agent_kind_and_service_has_its_own_identity() -> None:
    roles = set(DOMAIN.identities)
    assert {identity.agent_role(k) for k in agent_kinds(load_workflows())} <= roles
    assert {identity.SUPERVISOR, identity.HANDOFF_VALIDATOR, identity.CLIENT} <= roles
    key_ids = {i.key_id for i in DOMAIN.identities.values()}
    assert len(key_ids) == len(roles)  # no two roles share a key
