"""Supervisor handlers: feed events to the state machine, publish checkpoint first, then its effects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from baton import topics
from baton.bus.base import BusRecord
from baton.contracts.models import (
    Envelope,
    Event,
    StepRequested,
    WorkflowCheckpointed,
    WorkflowCompleted,
    WorkflowEscalated,
    WorkflowHalted,
    stable_event_id,
)
from baton.messaging import EventBus, RejectedEvent
from baton.supervisor import Effect, Outcome, RequestStep, Supervisor, TaskRejectedError, WorkflowState, effect_event_id


class SupervisorHandlers:
    """Publishes what the state machine decides; restores state from checkpoints on start."""

    def __init__(self, events: EventBus, supervisor: Supervisor, *, clock: Callable[[], float] = time.time) -> None:
        self._events = events
        self.supervisor = supervisor
        self._clock = clock
        self._timers: set[asyncio.Task[None]] = set()
        self.outcomes = 0

    async def restore(self, record: BusRecord) -> None:
        """Adopt the state carried by one checkpoint record (startup replay)."""
        try:
            event = await self._events.serde.decode(record.value)
        except ValueError:
            return  # an undecodable checkpoint was dead-lettered when it was first consumed
        if isinstance(event, WorkflowCheckpointed) and event.supervisor_state_json not in ("", "{}"):
            self.supervisor.restore(WorkflowState.from_json(event.supervisor_state_json))

    async def resume(self) -> int:
        """Re-issue the step every running workflow waits for (agents' step ledger makes this idempotent)."""
        owed = 0
        for state in list(self.supervisor.states.values()):
            if state.status == "running":
                delay = max(0.0, (state.retry_at or 0.0) - self._clock())
                await self._effect(state, RequestStep(state.current_agent, state.attempt, delay), None)
                owed += 1
        return owed

    async def on_event(self, event: Event, record: BusRecord) -> None:
        try:
            transition = self.supervisor.handle(event, self._clock())
        except TaskRejectedError as exc:
            raise RejectedEvent(exc.code, str(exc)) from exc
        if transition.state is not None:
            await self._apply(transition.state, transition.effects, event)

    async def sweep(self) -> None:
        """Halt workflows past their wall-clock budget even when no event arrives for them."""
        for state, outcome in self.supervisor.check_wall_clock(self._clock()):
            await self._apply(state, (outcome,), None)

    async def _apply(self, state: WorkflowState, effects: tuple[Effect, ...], cause: Event | None) -> None:
        spec = self.supervisor.workflows[state.workflow_type]
        checkpoint_id = stable_event_id("checkpoint", state.workflow_id, state.seq)
        envelope = self._make_envelope(state, cause, checkpoint_id)
        await self._events.publish(
            topics.CHECKPOINTS,
            WorkflowCheckpointed(
                envelope=envelope,
                workflow_type=spec.name,
                state=state.status,
                next_agent=state.current_agent if state.status == "running" else None,
                completed_steps=list(state.completed_steps),
                snapshot=state.checkpoint,
                budgets_json=json.dumps({"steps": state.steps, "tokens": state.tokens, "tool_calls": state.tool_calls}),
                supervisor_state_json=state.to_json(),
            ),
        )
        for effect in effects:
            await self._effect(state, effect, cause)

    async def _effect(self, state: WorkflowState, effect: Effect, cause: Event | None) -> None:
        if isinstance(effect, RequestStep):
            request = StepRequested(
                envelope=self._make_envelope(state, cause, effect_event_id(state, effect)),
                agent=effect.agent,
                attempt=effect.attempt,
                snapshot=state.checkpoint,
            )
            if effect.delay_s > 0:
                task = asyncio.create_task(self._later(effect.delay_s, topics.agent_steps(effect.agent), request))
                self._timers.add(task)
                task.add_done_callback(self._timers.discard)
            else:
                await self._events.publish(topics.agent_steps(effect.agent), request)
            return
        await self._outcome(state, effect, cause)

    async def _later(self, delay_s: float, topic: str, event: Event) -> None:
        await asyncio.sleep(delay_s)
        await self._events.publish(topic, event)

    async def _outcome(self, state: WorkflowState, outcome: Outcome, cause: Event | None) -> None:
        envelope = self._make_envelope(state, cause, effect_event_id(state, outcome))
        self.outcomes += 1
        event: Event
        if outcome.kind == "completed":
            event = WorkflowCompleted(
                envelope=envelope,
                workflow_type=state.workflow_type,
                snapshot=state.checkpoint,
                steps=len(state.completed_steps),
            )
        elif outcome.kind == "halted":
            event = WorkflowHalted(
                envelope=envelope,
                workflow_type=state.workflow_type,
                reason_code=outcome.reason_code,
                reason=outcome.reason,
                failure_class=outcome.failure_class,
            )
        else:
            event = WorkflowEscalated(
                envelope=envelope,
                workflow_type=state.workflow_type,
                reason_code=outcome.reason_code,
                reason=outcome.reason,
                escalated_to=self.supervisor.workflows[state.workflow_type].escalation.queue,
            )
        await self._events.publish(topics.OUTCOMES, event)

    def _make_envelope(self, state: WorkflowState, cause: Event | None, event_id: str) -> Envelope:
        return Envelope(
            event_id=event_id,
            workflow_id=state.workflow_id,
            tenant_id=state.tenant_id,
            step_seq=state.seq,
            causation_id=cause.envelope.event_id if cause is not None else None,
            correlation_id=state.correlation_id,
            producer=self._events.producer,
        )

    async def stop(self) -> None:
        for task in list(self._timers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
