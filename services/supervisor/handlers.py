"""Supervisor handlers: decide with the state machine, publish checkpoint then effects, commit once acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
from collections.abc import Callable, Collection

from baton import topics
from baton.anomaly import BehaviourMonitor, StepBehaviour
from baton.bus.base import BusRecord
from baton.contracts.models import (
    AgentAnomaly,
    ControlAction,
    ControlCommand,
    Envelope,
    Event,
    FailureClass,
    PermissionTier,
    StepCompleted,
    StepRequested,
    TaskRequested,
    WorkflowCheckpointed,
    WorkflowCompleted,
    WorkflowEscalated,
    WorkflowHalted,
    stable_event_id,
)
from baton.contracts.serde import DecodeError
from baton.control import ControlState, Obeyed, in_scope
from baton.identity import AuthenticationError
from baton.messaging import EventBus, RejectedEvent, clip, unauthorized
from baton.policy.grants import DEFAULT_TICKET_TTL_S, issue_ticket
from baton.runtime import KeyedLocks
from baton.supervisor import (
    Effect,
    Outcome,
    RequestStep,
    Supervisor,
    Transition,
    UnknownWorkflowError,
    WorkflowState,
    effect_event_id,
    pending_outcome,
)
from baton.telemetry import metrics, tracing

log = logging.getLogger(__name__)

_RETRY_AFTER_FAILED_PUBLISH_S = 0.5


# Tools of one step the behaviour monitor reads (a step's loop budget keeps real ones far below).
MAX_STEP_TOOLS = 64


class SupervisorHandlers:
    """Publishes what the state machine decides; restores the workflows of the partitions it is assigned.

    Every change of a workflow's held state (an event, a wall-clock halt, a due retry) runs under that
    workflow's lock, so two of them never decide from the same state; different workflows proceed
    concurrently (the bus hands over different workflows' events at once), which is what lets their
    publishes share the producer's requests.
    """

    def __init__(
        self,
        events: EventBus,
        supervisor: Supervisor,
        *,
        clock: Callable[[], float] = time.time,
        stall_after_s: float = 60.0,
        control: ControlState | None = None,
        behaviour: BehaviourMonitor | None = None,
        halt_on_anomaly: Collection[str] = (),
    ) -> None:
        self._behaviour = behaviour
        self._halt_on_anomaly = frozenset(halt_on_anomaly)
        self.anomalies = 0
        self._events = events
        self.control = control
        self._stall_after_s = stall_after_s
        self._moved_at: dict[str, float] = {}  # when each held workflow last changed or was nudged
        self.supervisor = supervisor
        self._clock = clock
        self._locks = KeyedLocks()
        self._partition_of: dict[str, int] = {}
        self._retries: list[tuple[float, str]] = []  # (due, workflow id), a heap
        self._retry_wake = asyncio.Event()
        # Verdicts that arrived before their step's result, one per workflow, applied once it is counted.
        # Not durable, and need not be: a new owner re-issues the step, whose stored events and verdict
        # are sent again.
        self._early: dict[str, Event] = {}
        self._sending: set[asyncio.Task[None]] = set()  # outcomes the kill switch decided, being published
        self.outcomes = 0
        self.restored = 0
        self.refused_checkpoints = 0
        self.nudged = 0

    # -- partitions coming and going --------------------------------------------------------------

    async def restore(self, record: BusRecord) -> None:
        """Adopt the state one checkpoint record carries; a checkpoint that does not parse, or that a
        supervisor did not sign, is skipped (the validator's feed dead-letters it with its reason)."""
        where = f"{record.topic}@{record.partition}/{record.offset}"
        try:
            role = self._events.authenticate(record)  # before decoding: bytes nobody vouches for are not parsed
        except AuthenticationError as exc:
            log.warning("checkpoint %s not adopted: %s: %s", where, exc.code, exc)
            self.refused_checkpoints += 1
            return
        try:
            event = await self._events.serde.decode(record.value)
        except DecodeError as exc:
            if exc.transient:
                raise
            log.warning("checkpoint %s skipped: %s", where, exc)
            return
        if not isinstance(event, WorkflowCheckpointed) or event.supervisor_state_json in ("", "{}"):
            return
        problem = unauthorized(event, record.topic, role)
        if problem is not None:
            log.warning("checkpoint %s not adopted: NOT_AUTHORIZED: %s", where, problem)
            self.refused_checkpoints += 1
            return
        try:
            state = WorkflowState.from_checkpoint(event)
        except ValueError as exc:
            log.warning("checkpoint %s@%d/%d skipped: %s", record.topic, record.partition, record.offset, exc)
            return
        if (
            state.status == "running"
            and state.pending_outcome is None
            and state.workflow_type not in self.supervisor.workflows
        ):
            log.warning(
                "checkpoint of %s skipped: workflow type %r is not declared", state.workflow_id, state.workflow_type
            )
            return
        if self.supervisor.commit(state):
            self.restored += 1
            if state.status == "running":
                self._partition_of[state.workflow_id] = record.partition

    async def on_assign(self, assigned: frozenset[tuple[str, int]]) -> None:
        """Restore the workflows of newly owned partitions from their checkpoints, then re-issue owed steps."""
        partitions = {p for _t, p in assigned}
        if not partitions:
            return
        # No record of these partitions reaches on_event before this returns, and the sweep and the
        # retry loop only act on workflows already held, so the restore needs no workflow's lock.
        try:
            await self._events.bus.replay([topics.CHECKPOINTS], self.restore, partitions=partitions)
        except BaseException:
            # Not restored whole: hold none of it, the bus retries the assignment.
            self._forget_partitions(partitions)
            raise
        owed = await self._resume(partitions)
        log.info("partitions %s assigned: %d workflows running, %d steps re-issued", sorted(partitions), owed, owed)

    async def on_revoke(self, revoked: frozenset[tuple[str, int]]) -> None:
        """Forget the workflows of partitions another replica now owns: only the owner acts on a workflow."""
        partitions = {p for _t, p in revoked}
        gone = [wf for wf, p in self._partition_of.items() if p in partitions]
        for wf in gone:
            # Waits for a retry or a sweep in hand on that workflow: it must not hold it again afterwards.
            async with self._locks.hold(wf):
                self._forget_partitions(partitions, only={wf})
        self._forget_partitions(partitions)

    def _forget_partitions(self, partitions: Collection[int], *, only: Collection[str] | None = None) -> None:
        gone = {wf for wf, p in self._partition_of.items() if p in partitions and (only is None or wf in only)}
        self.supervisor.forget(gone)
        for wf in gone:
            del self._partition_of[wf]
            self._early.pop(wf, None)
            self._moved_at.pop(wf, None)

    async def _resume(self, partitions: Collection[int]) -> int:
        """Re-issue the step every running workflow of these partitions waits for (agents' ledger dedupes)."""
        owed = 0
        for state in list(self.supervisor.states.values()):
            if self._partition_of.get(state.workflow_id) not in partitions:
                continue
            if state.awaiting_approval is not None:
                continue  # nothing is owed until the approval is decided
            owed += 1
            if state.retry_at is None:
                # Owed now; the retry loop issues it, and tries again if a publish fails, so a failed
                # publish neither fails the assignment nor loses the step.
                state.retry_at = self._clock()
            self._schedule(state.retry_at, state.workflow_id)
        return owed

    # -- events ------------------------------------------------------------------------------------

    async def on_event(self, event: Event, record: BusRecord) -> None:
        wf = event.envelope.workflow_id
        async with self._locks.hold(wf):
            transition = self._killed(event)
            if transition is None:
                try:
                    transition = self.supervisor.handle(event, self._clock())
                except UnknownWorkflowError as exc:
                    raise RejectedEvent(exc.code, str(exc)) from exc
            if transition.early:
                self._early[wf] = event
                return
            state = transition.state
            if isinstance(event, StepCompleted) and state is not None and not transition.replay:
                transition = await self._judge_behaviour(event, transition)
                state = transition.state
            if isinstance(event, TaskRequested) and state is not None and not state.traceparent:
                state.traceparent = tracing.traceparent() or ""
                if state.pending_outcome is None:
                    metrics.WORKFLOWS_STARTED.labels(state.workflow_type).inc()
            if transition.state is not None:
                await self._apply(transition, event, partition=record.partition)
            await self._apply_early(wf, record.partition)

    async def _judge_behaviour(self, event: StepCompleted, transition: Transition) -> Transition:
        """Hold the step against its agent's baseline; publish what is off (before the step's transition is
        applied, so a redelivered result publishes the same anomaly ids); halt by policy."""
        state = transition.state
        if self._behaviour is None or state is None or event.error_code == "APPROVAL_REQUIRED":
            # A step that stopped to wait for a human is not what the agent does: its resumed run is.
            return transition
        spec = self.supervisor.workflows.get(state.workflow_type)
        agent = next((a for a in spec.agents if a.name == event.agent), None) if spec is not None else None
        privileged = sum(
            1
            for name in event.tools
            if agent is not None and (tool := agent.tool(name)) is not None and tool.tier is not PermissionTier.READ
        )
        step = StepBehaviour(
            agent=event.agent,
            workflow_id=state.workflow_id,
            workflow_type=state.workflow_type,
            # The agent reports them: as many and as long as the detector reads, never more.
            tools=tuple(clip(name, 64) for name in event.tools[:MAX_STEP_TOOLS]),
            privileged_calls=privileged,
            tokens=event.tokens_used,
            duration_s=event.duration_ms / 1000,
            failed=not event.succeeded,
        )
        try:
            found = self._behaviour.observe(step)
        except Exception:  # the detector never holds up a workflow
            log.exception("behaviour of %s's step not judged", state.workflow_id)
            return transition
        halting = [a for a in found if a.kind in self._halt_on_anomaly]
        halt = bool(halting) and state.pending_outcome is None
        for anomaly in found:
            action = "halted" if halt and anomaly in halting else "flagged"
            metrics.ANOMALIES.labels(metrics.bounded("agent", anomaly.agent), anomaly.kind, action).inc()
            log.warning(
                "anomaly (%s) of %s in %s: %s", anomaly.kind, anomaly.agent, anomaly.workflow_id, anomaly.detail
            )
            envelope = self._events.envelope(cause=event).model_copy(
                update={"event_id": stable_event_id(event.envelope.event_id, "anomaly", anomaly.kind, anomaly.feature)}
            )
            await self._publish(
                state,
                topics.ANOMALIES,
                AgentAnomaly(
                    envelope=envelope,
                    agent=anomaly.agent,
                    kind=anomaly.kind,
                    feature=anomaly.feature,
                    observed=anomaly.observed,
                    baseline=anomaly.baseline,
                    score=anomaly.score,
                    threshold=anomaly.threshold,
                    action=action,
                    detail=anomaly.detail,
                ),
            )
        self.anomalies += len(found)
        if not halt:
            return transition
        first = halting[0]
        return self.supervisor.halt(
            state,
            "ANOMALY",
            f"halted by policy on a behaviour anomaly ({first.kind}): {first.detail}",
            FailureClass.SYSTEMIC,
        )

    def _killed(self, event: Event) -> Transition | None:
        """The kill switch's transition for this event's workflow, when a command covers it (else None)."""
        if self.control is None or self.control.quiet:
            return None
        wf = event.envelope.workflow_id
        held = self.supervisor.states.get(wf)
        why = self.control.blocked(wf, held.tenant_id if held is not None else event.envelope.tenant_id)
        return None if why is None else self.supervisor.killed(event, why, self._clock())

    async def on_control(self, command: ControlCommand) -> Obeyed:
        """Halt every running workflow this replica owns in the command's scope, all at once; returns how many.

        Returns once each halt is decided durably (checkpointed with the KILLED outcome pending: whoever holds
        the workflow from then on can only send that outcome); the outcomes and final checkpoints follow
        without holding up the confirmation (docs/decisions/0016-kill-switch.md).
        """
        if command.command is not ControlAction.HALT:
            return Obeyed()
        reason = f"killed by {command.issued_by}: {command.reason}"
        owned = [wf for wf, state in list(self.supervisor.states.items()) if in_scope(command, wf, state.tenant_id)]

        async def decide(wf: str) -> bool:
            async with self._locks.hold(wf):
                transition = self.supervisor.kill(wf, reason)
                if transition is None or transition.state is None:
                    return False  # finished or decided meanwhile
                await self._checkpoint(transition.state, command)
                self._hold(transition.state, None)
            return True

        # Concurrently: the publishes share the producer's requests, so halting hundreds takes a few round trips.
        done = await asyncio.gather(*(decide(wf) for wf in owned), return_exceptions=True)
        decided = [wf for wf, r in zip(owned, done, strict=True) if r is True]
        for wf in decided:
            task = asyncio.create_task(self._send_owed(wf, command))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        failed = [r for r in done if isinstance(r, BaseException)]
        if failed:
            raise failed[0]  # the command is read again; the workflows decided already are not counted again
        undecided = sum(1 for state in self.supervisor.states.values() if state.pending_outcome is None)
        return Obeyed(halted=len(decided), detail=f"{undecided} undecided workflows held here")

    async def _send_owed(self, workflow_id: str, cause: Event) -> None:
        """Publish a decided outcome (and the final checkpoint) of a held workflow, until it is out."""
        delay = 0.05
        while True:
            async with self._locks.hold(workflow_id):
                held = self.supervisor.states.get(workflow_id)
                if held is None or held.pending_outcome is None:
                    return  # sent already (a redelivered event, the sweep) or moved to another replica
                owed = pending_outcome(held)
                try:
                    await self._apply(Transition(held.copy(), (owed,) if owed else (), replay=True), cause)
                    return
                except Exception as exc:
                    log.warning("outcome of %s not published (%r); trying again in %.2fs", workflow_id, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _apply_early(self, workflow_id: str, partition: int) -> None:
        """Apply a held verdict once its step's result is counted; kept held until its publishes succeed."""
        early = self._early.get(workflow_id)
        if early is None:
            return
        if workflow_id not in self.supervisor.states:
            del self._early[workflow_id]  # finished (e.g. the result tripped a budget) or moved away
            return
        transition = self.supervisor.handle(early, self._clock())
        if transition.early:
            return
        if transition.state is not None:
            await self._apply(transition, early, partition=partition)
        self._early.pop(workflow_id, None)

    async def sweep(self) -> None:
        """Halt owned workflows past their wall-clock budget, and nudge those that stopped moving.

        Each workflow on its own, under its lock: one that fails (a publish not acknowledged) is tried
        next sweep and does not hold up the others.
        """
        now = self._clock()
        for wf in list(self.supervisor.states):
            if self.supervisor.wall_clock_halt(wf, now) is None and not self._stalled(wf, now):
                continue  # the common case, decided without taking the lock
            async with self._locks.hold(wf):
                transition = self.supervisor.wall_clock_halt(wf, now)  # again: it may have moved meanwhile
                if transition is not None:
                    try:
                        await self._apply(transition, None)
                    except Exception:
                        log.exception("wall-clock halt of %s not published; next sweep", wf)
                    continue
                state = self.supervisor.states.get(wf)
                if state is None or not self._stalled(wf, now):
                    continue
                # Nothing came back for what it waits on: a message was lost somewhere. Asking again is
                # safe (the agent's ledger replays a finished step's events, the validator its verdict,
                # an outcome keeps its id) and turns a silent hang into a logged, bounded delay.
                log.warning(
                    "%s has not moved for %.0fs waiting on %s; sending again what it waits on",
                    wf,
                    now - self._moved_at[wf],
                    state.current_agent,
                )
                self._moved_at[wf] = now
                self.nudged += 1
                try:
                    await self._owe(state)
                except Exception:
                    log.exception("nudge of %s not published; next sweep", wf)

    def _stalled(self, workflow_id: str, now: float) -> bool:
        """Held, not waiting for a delayed retry, and unchanged for stall_after_s."""
        state = self.supervisor.states.get(workflow_id)
        if state is None or state.retry_at is not None or state.awaiting_approval is not None:
            return False
        return now - self._moved_at.setdefault(workflow_id, now) >= self._stall_after_s

    async def run_retries(self) -> None:
        """Issue delayed retries when due; one whose publish fails is tried again, never dropped."""
        while True:
            now = self._clock()
            while self._retries and self._retries[0][0] <= now:
                _due, wf = heapq.heappop(self._retries)
                async with self._locks.hold(wf):
                    held = self.supervisor.states.get(wf)
                    if held is None or held.retry_at is None or held.retry_at > now:
                        continue  # moved on, finished, revoked, or rescheduled later
                    try:
                        await self._owe(held)
                    except Exception:
                        log.exception("delayed retry of %s not published; trying again", wf)
                        self._schedule(now + _RETRY_AFTER_FAILED_PUBLISH_S, wf)
                        continue
                    # In memory only: a restart re-issues it from the checkpoint, and the step id dedupes.
                    held.retry_at = None
            self._retry_wake.clear()
            timeout = max(0.0, self._retries[0][0] - self._clock()) if self._retries else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_wake.wait(), timeout)

    def _schedule(self, due: float, workflow_id: str) -> None:
        heapq.heappush(self._retries, (due, workflow_id))
        self._retry_wake.set()

    # -- publishing --------------------------------------------------------------------------------

    async def _apply(self, transition: Transition, cause: Event | None, *, partition: int | None = None) -> None:
        """Publish, then hold the state once everything it depends on was acknowledged.

        A running workflow: checkpoint, then the step request (the validator judges the step's handoff
        against that checkpoint). A decided outcome: a checkpoint with the outcome pending, the outcome,
        then the final checkpoint; a retry or a new owner re-sends exactly the pending outcome.
        """
        state = transition.state
        assert state is not None
        owed = pending_outcome(state)
        last_moved = self._moved_at.get(state.workflow_id)
        if not transition.replay:
            await self._checkpoint(state, cause)
            if owed is not None:
                # Held now, before the outcome is sent: from here on only this outcome is ever sent.
                self._hold(state, partition)
        for effect in transition.effects:
            if isinstance(effect, RequestStep) and (effect.delay_s > 0 or (transition.replay and state.retry_at)):
                continue  # owed later: the retry loop issues it
            await self._effect(state, effect, cause)
        if owed is None:
            if not transition.replay:
                # Held only once the step request is out too: had it failed, the redelivered event
                # would find the workflow moved on and nobody would ever ask for the step.
                self._hold(state, partition)
            return
        final = self.supervisor.finalize(state)
        await self._checkpoint(final, cause)
        if self.supervisor.commit(final):
            try:
                self._observe(final, owed, last_moved)
            except Exception:  # telemetry never fails a workflow: the outcome is out and committed
                log.exception("metrics or span of %s's outcome not recorded", final.workflow_id)
        wf = state.workflow_id
        self._partition_of.pop(wf, None)
        self._early.pop(wf, None)
        self._moved_at.pop(wf, None)

    def _observe(self, state: WorkflowState, outcome: Outcome, last_moved: float | None) -> None:
        """Count a finished workflow once (where its final checkpoint was committed) and record its span."""
        now = self._clock()
        kind, workflow = outcome.kind, state.workflow_type
        # A step's error code can become the outcome's reason: it came from an agent, so its label is bounded.
        reason = metrics.bounded("reason", outcome.reason_code or kind.upper())
        spec = self.supervisor.workflows.get(workflow)
        cost = state.tokens / 1000 * spec.budgets.cost_per_1k_tokens_usd if spec is not None else 0.0
        metrics.WORKFLOW_OUTCOMES.labels(workflow, kind, reason).inc()
        metrics.WORKFLOW_COST.labels(workflow, kind).inc(cost)
        metrics.WORKFLOW_STEPS.labels(workflow).observe(state.steps)
        metrics.WORKFLOW_TOOL_CALLS.labels(workflow).observe(state.tool_calls)
        metrics.WORKFLOW_TOKENS.labels(workflow).observe(state.tokens)
        metrics.WORKFLOW_DURATION.labels(workflow, kind).observe(max(0.0, state.running_s(now)))
        if kind != "completed" and last_moved is not None:
            metrics.FAILURE_DETECTION.labels(workflow, reason).observe(max(0.0, now - last_moved))
        breaker = breaker_of(reason)
        if breaker is not None:
            metrics.BREAKER_TRIPS.labels(breaker).inc()
        if kind == "escalated":
            metrics.ESCALATIONS.labels(workflow, reason).inc()
        if not tracing.enabled():
            return
        span = self._events.tracer.start_span(
            f"invoke_workflow {workflow}",
            context=tracing.context_of(state.traceparent),
            start_time=int(state.started_at * 1e9),
            attributes={
                tracing.GEN_AI_OPERATION: "invoke_workflow",
                tracing.GEN_AI_WORKFLOW_NAME: workflow,
                tracing.GEN_AI_CONVERSATION_ID: state.workflow_id,
                "baton.workflow.id": state.workflow_id,
                "baton.tenant.id": state.tenant_id,
                "baton.outcome": kind,
                "baton.outcome.reason": reason,
                "baton.steps": state.steps,
                "baton.context.version": state.checkpoint.version,
                "baton.context.sha256": state.checkpoint.sha256,
                "baton.budget.tokens": state.tokens,
                "baton.budget.tool_calls": state.tool_calls,
                "baton.budget.cost_usd": cost,
                "baton.waited_for_approval_s": state.waited_s,
            },
        )
        if kind != "completed":
            tracing.failed(span, reason, outcome.reason)
        span.end(int(now * 1e9))

    def _hold(self, state: WorkflowState, partition: int | None) -> None:
        if self.supervisor.commit(state):
            self._moved_at[state.workflow_id] = self._clock()
            if partition is not None:
                self._partition_of[state.workflow_id] = partition
            if state.pending_outcome is None and state.retry_at is not None:
                self._schedule(state.retry_at, state.workflow_id)

    async def _owe(self, state: WorkflowState) -> None:
        """Send again what a held workflow waits on: its pending outcome, or its step."""
        owed = pending_outcome(state)
        if owed is not None:
            await self._apply(Transition(state.copy(), (owed,), replay=True), None)
        else:
            await self._effect(state, RequestStep(state.current_agent, state.attempt), None)

    async def _checkpoint(self, state: WorkflowState, cause: Event | None) -> None:
        checkpoint_id = stable_event_id("checkpoint", state.workflow_id, state.seq)
        await self._publish(
            state,
            topics.CHECKPOINTS,
            WorkflowCheckpointed(
                envelope=self._make_envelope(state, cause, checkpoint_id),
                workflow_type=state.workflow_type,
                state=state.status,
                next_agent=state.current_agent if state.status == "running" else None,
                completed_steps=list(state.completed_steps),
                snapshot=state.checkpoint,
                budgets_json=json.dumps({"steps": state.steps, "tokens": state.tokens, "tool_calls": state.tool_calls}),
                supervisor_state_json=state.to_json(),
            ),
        )

    async def _effect(self, state: WorkflowState, effect: Effect, cause: Event | None) -> None:
        if isinstance(effect, RequestStep):
            request = StepRequested(
                envelope=self._make_envelope(state, cause, effect_event_id(state, effect)),
                agent=effect.agent,
                attempt=effect.attempt,
                snapshot=state.checkpoint,
                # What the agent shows the policy guard with each tool call: this supervisor opened this step.
                ticket=issue_ticket(
                    self._events.trust.identity,
                    ttl_s=DEFAULT_TICKET_TTL_S,
                    now=time.time(),
                    workflow_id=state.workflow_id,
                    tenant_id=state.tenant_id,
                    agent=effect.agent,
                    step_version=state.checkpoint.version,
                    context_sha256=state.checkpoint.sha256,
                    requested_by=state.requested_by,
                ),
                lineage=list(state.completed_steps),
                approval_token=state.approval_token,
            )
            await self._publish(state, topics.agent_steps(effect.agent), request)
            return
        await self._outcome(state, effect, cause)

    async def _outcome(self, state: WorkflowState, outcome: Outcome, cause: Event | None) -> None:
        envelope = self._make_envelope(state, cause, effect_event_id(state, outcome))
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
        await self._publish(state, topics.OUTCOMES, event)
        self.outcomes += 1

    async def _publish(self, state: WorkflowState, topic: str, event: Event) -> None:
        # In the workflow's trace even from a background loop (a delayed retry, the sweep, a takeover).
        with tracing.joined(state.traceparent):
            await self._events.publish(topic, event)

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


def breaker_of(reason_code: str) -> str | None:
    """The circuit breaker an outcome's reason names (a budget, the rate limit, the spend limit), if any."""
    if reason_code.startswith("BUDGET_"):
        return reason_code.removeprefix("BUDGET_").lower()
    return {"RATE_LIMITED": "rate", "SPEND_LIMIT": "spend"}.get(reason_code)
