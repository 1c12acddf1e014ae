"""The supervisor service's handlers on the embedded bus: a transition holds only once it was published."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from baton import topics
from baton.bus.base import BusRecord, BusUnavailableError
from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient
from baton.context import make_snapshot
from baton.contracts.models import (
    ContextDiff,
    Envelope,
    FailureClass,
    HandoffAccepted,
    StepCompleted,
    StepRequested,
    TaskRequested,
)
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus
from baton.supervisor import Supervisor, proposal_event_id
from baton.workflows import load_workflows
from baton_demo.chaos import FlakyBus
from services.supervisor import app as supervisor_app
from services.supervisor.config import Settings as SupervisorSettings
from services.supervisor.handlers import SupervisorHandlers
from tests.harness.collect import Collector
from tests.harness.identities import trust

WF = "wf-flaky"
ENV = Envelope(workflow_id=WF, tenant_id="t1", producer="test")
RECORD = BusRecord(topics.TASKS, 0, 0, WF.encode(), b"")

# What these tests check is not task admission (tests/component/test_task_admission.py is).
NO_ADMISSION = SupervisorSettings(admission=False)


async def _handlers(*, backoff_base_s: float = 0.5) -> tuple[SupervisorHandlers, FlakyBus, EmbeddedBus]:
    inner = EmbeddedBus(partitions=1)
    bus = FlakyBus(inner, failure_rate=0.0)
    events = EventBus(
        bus=bus, serde=AvroSerde(LocalSchemaRegistry()), producer="supervisor-test", trust=trust("supervisor")
    )
    supervisor = Supervisor(load_workflows(), backoff_base_s=backoff_base_s, backoff_cap_s=backoff_base_s)
    return SupervisorHandlers(events, supervisor), bus, inner


async def _steps(inner: EmbeddedBus, agent: str) -> list[StepRequested]:
    serde = AvroSerde(LocalSchemaRegistry())
    out = []
    for record in inner.log_of((topics.agent_steps(agent), 0)):
        event = await serde.decode(record.value)
        assert isinstance(event, StepRequested)
        out.append(event)
    return out


async def test_a_handoff_whose_publish_failed_is_decided_again_on_retry() -> None:
    handlers, bus, inner = await _handlers()
    task = TaskRequested(
        envelope=ENV, workflow_type="support_refund", input_json='{"ticket_id": "t-1"}', requested_by="t"
    )
    await handlers.on_event(task, RECORD)
    await handlers.on_event(StepCompleted(envelope=ENV, agent="ticket_lookup", succeeded=True, attempt=1), RECORD)
    cp = handlers.supervisor.states[WF].checkpoint
    accepted = HandoffAccepted(
        envelope=ENV.model_copy(update={"causation_id": proposal_event_id(WF, "ticket_lookup", cp.version, 1)}),
        from_agent="ticket_lookup",
        to_agent="refund_preview",
        snapshot=make_snapshot({"ticket_id": "t-1", "ticket": {}, "order": {}}, version=2, parent=cp),
        diff=ContextDiff(added=["order", "ticket"]),
    )
    bus.failure_rate = 1.0
    with pytest.raises(BusUnavailableError):
        await handlers.on_event(accepted, RECORD)
    assert handlers.supervisor.states[WF].current_agent == "ticket_lookup"  # nothing moved
    bus.failure_rate = 0.0
    await handlers.on_event(accepted, RECORD)  # the bus re-delivers the event: decided again
    assert handlers.supervisor.states[WF].current_agent == "refund_preview"
    [step] = await _steps(inner, "refund_preview")
    assert step.snapshot == accepted.snapshot


async def test_a_delayed_retry_is_published_even_when_its_first_publish_fails() -> None:
    handlers, bus, inner = await _handlers(backoff_base_s=0.05)
    retries = asyncio.create_task(handlers.run_retries())
    try:
        task = TaskRequested(
            envelope=ENV, workflow_type="support_refund", input_json=json.dumps({"ticket_id": "t-1"}), requested_by="t"
        )
        await handlers.on_event(task, RECORD)
        failed = StepCompleted(
            envelope=ENV,
            agent="ticket_lookup",
            succeeded=False,
            error_code="RATE_LIMITED",
            failure_class=FailureClass.TRANSIENT,
            attempt=1,
        )
        await handlers.on_event(failed, RECORD)
        assert handlers.supervisor.states[WF].retry_at is not None
        published: Collector[BusRecord] = Collector()
        await inner.subscribe([topics.agent_steps("ticket_lookup")], group_id="test", handler=published.add)
        bus.failure_rate = 1.0  # the retry's first publish fails: it must be tried again, not lost
        await asyncio.wait_for(bus.a_publish_failed.wait(), 10)
        bus.failure_rate = 0.0
        await published.wait_for_count(2, within=10)
        steps = await _steps(inner, "ticket_lookup")
        assert [s.attempt for s in steps] == [1, 2]
        assert handlers.supervisor.states[WF].retry_at is None
    finally:
        retries.cancel()
        await inner.stop()


async def test_only_the_replica_that_owns_a_workflow_halts_it_on_the_wall_clock() -> None:
    bus = EmbeddedBus(partitions=4)
    serde = AvroSerde(LocalSchemaRegistry())
    replicas = [
        await supervisor_app.start(
            EventBus(bus=bus, serde=serde, producer=f"supervisor-{i}", trust=trust("supervisor")),
            NO_ADMISSION,
        )
        for i in range(2)
    ]
    outcomes: Collector[BusRecord] = Collector()
    await bus.subscribe([topics.OUTCOMES], group_id="test.outcomes", handler=outcomes.add)
    client = BatonClient(EventBus(bus=bus, serde=serde, producer="client", trust=trust("client")))
    wanted = [f"stuck-{i}" for i in range(12)]  # no agent runs: they wait until the wall clock halts them
    for wf in wanted:
        await client.submit("support_refund", {"ticket_id": "t-1"}, tenant_id="t1", workflow_id=wf)
    checkpoints: Collector[BusRecord] = Collector()
    await bus.subscribe([topics.CHECKPOINTS], group_id="test.checkpoints", handler=checkpoints.add)
    await checkpoints.wait_for_count(len(wanted))
    held = [set(r.handlers.supervisor.states) for r in replicas]
    assert held[0] and held[1] and not held[0] & held[1] and held[0] | held[1] == set(wanted)
    for replica in replicas:
        replica.handlers._clock = lambda: time.time() + 100_000  # past every wall-clock budget
        await replica.handlers.sweep()
    records = await outcomes.wait_for_count(len(wanted))
    halted = [(await serde.decode(r.value)).envelope.workflow_id for r in records]
    assert sorted(halted) == sorted(wanted)  # each once: only its owner halted it
    for replica in replicas:
        await replica.stop()
    await bus.stop()


async def test_a_workflow_whose_step_got_no_answer_is_nudged_not_left_hanging() -> None:
    handlers, _bus, inner = await _handlers()
    task = TaskRequested(
        envelope=ENV, workflow_type="support_refund", input_json='{"ticket_id": "t-1"}', requested_by="t"
    )
    await handlers.on_event(task, RECORD)
    await handlers.sweep()
    assert handlers.nudged == 0  # it just moved
    handlers._clock = lambda: time.time() + 100  # 100 s without a result or a verdict: something was lost
    await handlers.sweep()
    assert handlers.nudged == 1
    first, again = await _steps(inner, "ticket_lookup")
    assert again.envelope.event_id == first.envelope.event_id  # the same step, which the agent's ledger dedupes


async def test_a_handoff_whose_step_request_failed_after_its_checkpoint_is_not_left_waiting() -> None:
    handlers, bus, inner = await _handlers()
    task = TaskRequested(
        envelope=ENV, workflow_type="support_refund", input_json='{"ticket_id": "t-1"}', requested_by="t"
    )
    await handlers.on_event(task, RECORD)
    await handlers.on_event(StepCompleted(envelope=ENV, agent="ticket_lookup", succeeded=True, attempt=1), RECORD)
    cp = handlers.supervisor.states[WF].checkpoint
    accepted = HandoffAccepted(
        envelope=ENV.model_copy(update={"causation_id": proposal_event_id(WF, "ticket_lookup", cp.version, 1)}),
        from_agent="ticket_lookup",
        to_agent="refund_preview",
        snapshot=make_snapshot({"ticket_id": "t-1", "ticket": {}, "order": {}}, version=2, parent=cp),
        diff=ContextDiff(added=["order", "ticket"]),
    )
    bus.failure_rate, bus.only = 1.0, frozenset({topics.agent_steps("refund_preview")})
    with pytest.raises(BusUnavailableError):
        await handlers.on_event(accepted, RECORD)  # the checkpoint went out, the step request did not
    assert handlers.supervisor.states[WF].current_agent == "ticket_lookup"  # so nothing is held yet
    bus.failure_rate = 0.0
    await handlers.on_event(accepted, RECORD)  # redelivered: decided again, and the step is requested
    assert [s.agent for s in await _steps(inner, "refund_preview")] == ["refund_preview"]
