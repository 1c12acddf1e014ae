"""Agent handlers: receive a step (or an accepted handoff), re-check it, run the step, propose the handoff."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable

from baton import topics
from baton.agent import StepOutcome, ToolFlags, run_step
from baton.bus.base import BusRecord, RetryLaterError
from baton.context import canonical_bytes, make_snapshot
from baton.contracts.models import (
    AgentDecision,
    ContextSnapshot,
    Envelope,
    Event,
    FailureClass,
    GuardFlagged,
    GuardFlagItem,
    GuardFlagKind,
    HandoffProposed,
    StepCompleted,
    StepRequested,
    stable_event_id,
)
from baton.control import KILLED, ToolCalls
from baton.handoff import verify_snapshot_integrity
from baton.ledger import Ledger, StepBusyError
from baton.messaging import EventBus, RejectedEvent
from baton.model import ModelClient
from baton.policy.screening import OutputScreen
from baton.telemetry import metrics, tracing
from baton.tools.executor import Authorizer, StepTools
from baton.tools.registry import ToolRegistry
from baton.workflows import AgentSpec, WorkflowSpec

# What leaves the agent as its handoff: (the proposal, the snapshot received, the attempt) -> the proposal sent.
ProposalFilter = Callable[[HandoffProposed, ContextSnapshot, int], HandoffProposed]


class AgentHandlers:
    """One agent kind's step handler."""

    def __init__(
        self,
        events: EventBus,
        *,
        workflow: WorkflowSpec,
        agent: AgentSpec,
        model: ModelClient,
        tools: ToolRegistry,
        ledger: Ledger,
        max_context_bytes: int,
        proposal_filter: ProposalFilter | None = None,
        guard: Authorizer | None = None,
        screen: OutputScreen | None = None,
        kill_switch: ToolCalls | None = None,
    ) -> None:
        self._guard = guard
        self._screen = screen
        self._events = events
        self._kill_switch = kill_switch
        self._workflow = workflow
        self._agent = agent
        self._model = model
        self._tools = tools
        self._schemas = {t.name: tools.declaration(t.name).parameters for t in agent.tools}
        self._ledger = ledger
        self._proposal_filter = proposal_filter
        self._max_bytes = max_context_bytes
        self.steps_run = 0
        self.steps_replayed = 0

    async def on_step(self, event: Event, record: BusRecord) -> None:
        """Run one step, exactly once in effect (the step ledger replays a finished step's events)."""
        if not isinstance(event, StepRequested) or event.agent != self._agent.name:
            raise RejectedEvent(
                "UNEXPECTED_EVENT",
                f"{record.topic} carries StepRequested events for {self._agent.name}; got {event.event_type} "
                f"for {getattr(event, 'agent', '?')}: publish it to its own topic",
            )
        snapshot, attempt = event.snapshot, event.attempt
        wf = event.envelope.workflow_id
        step_key = f"{wf}:{self._agent.name}:{snapshot.version}:{attempt}"
        owner = self._events.producer
        try:
            # One trip to the ledger: claim the step and pin the workflow's tenant (recorded by its first step).
            stored, tenant_owner = await asyncio.to_thread(
                self._ledger.begin_step,
                step_key,
                workflow_id=wf,
                agent=self._agent.name,
                tenant_id=event.envelope.tenant_id,
                owner=owner,
            )
        except StepBusyError as exc:
            raise RetryLaterError(str(exc)) from exc
        if stored is not None:
            self.steps_replayed += 1
            for topic, data in json.loads(stored):
                await self._events.publish_encoded(topic, base64.b64decode(data), workflow_id=wf)
            return
        self.steps_run += 1
        attributes = {
            tracing.GEN_AI_OPERATION: "invoke_agent",
            tracing.GEN_AI_AGENT_NAME: self._agent.name,
            tracing.GEN_AI_AGENT_ID: owner,
            tracing.GEN_AI_WORKFLOW_NAME: self._workflow.name,
            tracing.GEN_AI_CONVERSATION_ID: wf,
            "baton.workflow.id": wf,
            "baton.step": snapshot.version,
            "baton.attempt": attempt,
            "baton.context.version": snapshot.version,
            "baton.context.sha256": snapshot.sha256,
        }
        started = time.perf_counter()
        try:
            with tracing.span(f"invoke_agent {self._agent.name}", attributes) as span:
                outcome = await self._run(event, snapshot, attempt, tenant_owner)
                outcome.duration_s = time.perf_counter() - started
                if not outcome.succeeded:
                    tracing.failed(span, outcome.error_code or "FAILED", outcome.error or "")
                tracing.set_attributes(
                    span,
                    {
                        "baton.step.succeeded": outcome.succeeded,
                        "baton.step.error_code": outcome.error_code,
                        "baton.budget.tokens": outcome.tokens,
                        "baton.budget.tool_calls": outcome.tool_calls,
                        "baton.approval.id": outcome.approval_id,
                    },
                )
                encoded = await self._encode(event, snapshot, attempt, step_key, outcome)
            metrics.DECISION_LATENCY.labels(self._agent.name).observe(time.perf_counter() - started)
            # Outbox: the step's events are stored before they are published, so a publish that fails
            # is retried with the very same bytes instead of running the step (and the model) again.
            stored_json = json.dumps([(topic, base64.b64encode(data).decode()) for topic, data in encoded])
            await asyncio.to_thread(self._ledger.step_completed, step_key, stored_json)
        except BaseException:
            await asyncio.to_thread(self._ledger.step_abandoned, step_key, owner=owner)
            raise
        for topic, data in encoded:
            await self._events.publish_encoded(topic, data, workflow_id=wf)

    async def _run(self, event: Event, snapshot: ContextSnapshot, attempt: int, workflow_tenant: str) -> StepOutcome:
        rejection, context = verify_snapshot_integrity(snapshot, max_bytes=self._max_bytes)
        if rejection is not None:
            # Second line of defence: never act on a context whose hash does not hold.
            return StepOutcome(succeeded=False).fail(
                FailureClass.CONTEXT, f"RECEIVED_{rejection.code}", f"refused on receipt: {rejection.reason}"
            )

        wf, tenant = event.envelope.workflow_id, event.envelope.tenant_id
        if workflow_tenant != tenant:
            # Nothing runs: the step's envelope names another tenant than the workflow's earlier steps did.
            return StepOutcome(succeeded=False).fail(
                FailureClass.LOGIC,
                "TENANT_MISMATCH",
                f"a step of workflow {wf!r} came for tenant {tenant!r}, but the workflow's earlier steps ran for "
                f"tenant {workflow_tenant!r}: refused, nothing ran",
            )

        if self._kill_switch is not None and (why := self._kill_switch.blocked(wf, tenant)) is not None:
            return StepOutcome(succeeded=False).fail(FailureClass.SYSTEMIC, KILLED, f"refused, nothing ran: {why}")
        tools = StepTools(
            registry=self._tools,
            ledger=self._ledger,
            workflow_id=wf,
            agent=self._agent.name,
            tenant_id=tenant,
            step_version=snapshot.version,
            step_ticket=event.ticket if isinstance(event, StepRequested) else "",
            grants=self._events.trust.keyring if self._guard is not None else None,
            authorizer=self._guard,
            screen=self._screen,
            gate=self._kill_switch.gate(wf, tenant) if self._kill_switch is not None else None,
            lineage=tuple(event.lineage) if isinstance(event, StepRequested) else (),
            approval_token=event.approval_token if isinstance(event, StepRequested) else "",
        )
        outcome = await run_step(
            workflow=self._workflow,
            agent=self._agent,
            workflow_id=wf,
            context=context,
            model=self._model,
            tools=tools,
            attempt=attempt,
            tool_schemas=self._schemas,
        )
        if outcome.succeeded and outcome.context is not None:
            size = len(canonical_bytes(outcome.context))
            if size > self._max_bytes:
                # Refused here, at the first hop, rather than as a message the bus cannot carry.
                return outcome.fail(
                    FailureClass.LOGIC,
                    "CONTEXT_TOO_LARGE",
                    f"{self._agent.name} produced a {size}-byte context, over the {self._max_bytes}-byte limit: "
                    "keep large tool results outside the context and pass a reference",
                )
        return outcome

    def _envelope(self, cause: Event, step_key: str, what: str, seq: int) -> Envelope:
        base = self._events.envelope(cause=cause, step_seq=seq)
        return base.model_copy(update={"event_id": stable_event_id(step_key, what)})

    def _flags(self, cause: Event, step_key: str, seq: int, i: int, flags: ToolFlags) -> list[GuardFlagged]:
        """The screen's findings as events: what was redacted where (never the values), what was flagged."""
        out: list[GuardFlagged] = []
        if flags.redactions:
            total = sum(f.count for f in flags.redactions)
            out.append(
                GuardFlagged(
                    envelope=self._envelope(cause, step_key, f"redacted-{i}", seq),
                    kind=GuardFlagKind.PII_REDACTED,
                    source=self._events.role,
                    tool=flags.tool,
                    call_id=flags.key,
                    items=[GuardFlagItem(path=f.path, label=f.entity_type, count=f.count) for f in flags.redactions],
                    figures={"redacted": float(total)},
                    detail=f"{total} value(s) redacted from {flags.tool}'s result before it was recorded or passed on",
                )
            )
        if flags.injections:
            out.append(
                GuardFlagged(
                    envelope=self._envelope(cause, step_key, f"injection-{i}", seq),
                    kind=GuardFlagKind.INJECTION_FLAGGED,
                    source=self._events.role,
                    tool=flags.tool,
                    call_id=flags.key,
                    items=[GuardFlagItem(path=f.path, label=f.rule, count=1) for f in flags.injections],
                    figures={"score": max(f.score for f in flags.injections)},
                    detail=f"instruction-like content in {flags.tool}'s result ("
                    + "; ".join(f"{f.path}: {f.excerpt!r}" for f in flags.injections)
                    + "): not fed to the model, the step escalates",
                )
            )
        return out

    async def _encode(
        self, cause: Event, snapshot: ContextSnapshot, attempt: int, step_key: str, outcome: StepOutcome
    ) -> list[tuple[str, bytes]]:
        out: list[tuple[str, Event]] = []
        seq = snapshot.version
        for i, d in enumerate(outcome.decisions):
            out.append(
                (
                    topics.DECISIONS,
                    AgentDecision(
                        envelope=self._envelope(cause, step_key, f"decision-{i}", seq),
                        agent=self._agent.name,
                        decision_type=d.decision_type,
                        input_context_sha256=d.input_context_sha256,
                        tools_considered=d.tools_considered,
                        tool_selected=d.tool_selected,
                        confidence=d.confidence,
                        prompt_tokens=d.prompt_tokens,
                        completion_tokens=d.completion_tokens,
                        output_context_sha256=d.output_context_sha256,
                        rationale=d.rationale,
                    ),
                )
            )
        for i, flags in enumerate(outcome.flags):
            out.extend((topics.GUARD_FLAGS, flag) for flag in self._flags(cause, step_key, seq, i, flags))
        proposed: ContextSnapshot | None = None
        if outcome.succeeded and outcome.context is not None:
            proposed = make_snapshot(outcome.context, version=snapshot.version + 1, parent=snapshot)
        out.append(
            (
                topics.STEP_RESULTS,
                StepCompleted(
                    envelope=self._envelope(cause, step_key, "result", seq),
                    agent=self._agent.name,
                    succeeded=outcome.succeeded,
                    snapshot=proposed,
                    failure_class=outcome.failure_class,
                    error=outcome.error,
                    tokens_used=outcome.tokens,
                    tool_calls=outcome.tool_calls,
                    error_code=outcome.error_code,
                    confidence=outcome.confidence,
                    attempt=attempt,
                    approval_id=outcome.approval_id,
                    tools=list(outcome.tools),
                    duration_ms=round(outcome.duration_s * 1000),
                ),
            )
        )
        if proposed is not None and outcome.context is not None:
            proposal = HandoffProposed(
                envelope=self._envelope(cause, step_key, "handoff", seq),
                from_agent=self._agent.name,
                to_agent=self._workflow.next_agent(self._agent.name, outcome.context),
                snapshot=proposed,
                provenance=[outcome.provenance[k] for k in sorted(outcome.provenance)],
            )
            if self._proposal_filter is not None:
                proposal = self._proposal_filter(proposal, snapshot, attempt)
            out.append((topics.HANDOFF_PROPOSALS, proposal))
        return [(topic, await self._events.serde.encode(ev)) for topic, ev in out]
