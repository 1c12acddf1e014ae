"""Policy guard handlers: a verdict on every tool-call request; token spend from the agents' decisions."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from pymongo.errors import PyMongoError

from baton import topics
from baton.bus.base import BusRecord, RetryLaterError
from baton.contracts.models import (
    AgentDecision,
    ApprovalFallback,
    ApprovalRequested,
    Envelope,
    Event,
    GuardFlagged,
    GuardFlagKind,
    ToolCallAuthorized,
    ToolCallDenied,
    ToolCallRequested,
    stable_event_id,
)
from baton.control import ControlState
from baton.messaging import EventBus, RejectedEvent
from baton.policy.guard import ApprovalAsk, GuardVerdict, ToolAsk, ToolCallGuard
from baton.policy.spend import SpendAlert, SpendConflictError
from baton.telemetry import metrics, tracing

# Failures of what the guard reads (its spend accounts, the records' owners), retried rather than dead-lettered.
STORE_ERRORS: tuple[type[BaseException], ...] = (OSError, sqlite3.Error, PyMongoError, SpendConflictError)


class PolicyGuardHandlers:
    """Answers each ToolCallRequested with ToolCallAuthorized (carrying the signed grant) or ToolCallDenied."""

    def __init__(
        self,
        events: EventBus,
        guard: ToolCallGuard,
        *,
        control: ControlState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._events = events
        self._control = control
        self.guard = guard
        self._clock = clock
        self.authorized = 0
        self.denied: Counter[str] = Counter()
        self.spend_alerts = 0

    async def on_event(self, event: Event, record: BusRecord) -> None:
        try:
            if isinstance(event, ToolCallRequested):
                await self.on_request(event)
                return
            if isinstance(event, AgentDecision):
                await self.on_decision(event)
                return
        except STORE_ERRORS as exc:
            # The spend store or the ownership hook's store failed: not the request's fault. Retried later (the
            # partition waits) rather than dead-lettered, so no token charge is lost and no call decided without.
            raise RetryLaterError(f"the policy guard could not decide {event.event_type}: {exc!r}") from exc
        raise RejectedEvent(
            "UNEXPECTED_EVENT",
            f"the policy guard reads ToolCallRequested and AgentDecision; got {event.event_type} on {record.topic}",
        )

    async def on_request(self, event: ToolCallRequested) -> None:
        env = event.envelope
        ask = ToolAsk(
            call_id=event.call_id,
            workflow_id=env.workflow_id,
            tenant_id=env.tenant_id,
            agent=event.agent,
            tool=event.tool,
            arguments_json=event.arguments_json,
            arguments_sha256=event.arguments_sha256,
            idempotency_key=event.idempotency_key,
            step_version=event.step_version,
            step_ticket=event.step_ticket,
            rationale=event.rationale,
            confidence=event.confidence,
            decision_type=event.decision_type,
            preview_json=event.preview_json,
            lineage=tuple(event.lineage),
            bound_from_json=event.bound_from_json,
            approval_token=event.approval_token,
        )
        killed = self._control.blocked(env.workflow_id, env.tenant_id) if self._control is not None else None
        if killed is not None:
            verdict = self.guard.refuse(
                ask, "KILLED", f"halted by the kill switch ({killed}): no tool runs until `baton resume`"
            )
        else:
            with tracing.span(
                "run_guardrail baton.policy-guard",
                {
                    tracing.GEN_AI_OPERATION: "run_guardrail",
                    tracing.GEN_AI_GUARDRAIL_NAME: "baton.policy-guard",
                    tracing.GEN_AI_TOOL_NAME: event.tool,
                    tracing.GEN_AI_TOOL_CALL_ID: event.call_id,
                    tracing.GEN_AI_AGENT_NAME: event.agent,
                    "baton.workflow.id": env.workflow_id,
                    "baton.step": event.step_version,
                },
            ) as span:
                verdict = await self.guard.decide(ask, now=self._clock())
                decision = "allow" if verdict.authorized else ("approval_required" if verdict.approval else "deny")
                tracing.set_attributes(
                    span,
                    {
                        tracing.GEN_AI_GUARDRAIL_DECISION: decision,
                        tracing.GEN_AI_GUARDRAIL_REASON: verdict.code,
                        tracing.GEN_AI_GUARDRAIL_POLICY: verdict.policy_version,
                        "baton.tool.tier": verdict.tier.value if verdict.tier is not None else None,
                        "baton.guard.policies": list(verdict.policies),
                        "baton.budget.cost_usd": verdict.cost_usd,
                        "baton.approval.id": verdict.approval.approval_id if verdict.approval else None,
                    },
                )
        tier = verdict.tier.value if verdict.tier is not None else "unknown"
        # The tool is named by the agent (an undeclared one too): its label is bounded.
        tool = metrics.bounded("tool", event.tool)
        metrics.GUARD_VERDICTS.labels(tool, tier, "allow" if verdict.authorized else "deny").inc()
        if not verdict.authorized:
            metrics.GUARD_DENIALS.labels(verdict.code).inc()
        for alert in verdict.alerts:
            metrics.TENANT_SPEND_RATIO.labels(alert.tenant_id).set(alert.share)
        out: list[tuple[str, Event]] = []
        if verdict.approval is not None:
            out.append((topics.APPROVAL_REQUESTS, self._approval_event(event, ask, verdict.approval)))
        out.append((topics.TOOL_VERDICTS, self._verdict_event(event, verdict)))
        if verdict.rate_limited:
            out.append((topics.GUARD_FLAGS, self._flag(event, GuardFlagKind.RATE_LIMITED, verdict.reason, "rate")))
        out.extend((topics.GUARD_FLAGS, self._alert(event, a)) for a in verdict.alerts)
        for topic, ev in out:
            await self._events.publish(topic, ev)
        if verdict.authorized:
            self.authorized += 1
        else:
            self.denied[verdict.code] += 1

    async def on_decision(self, event: AgentDecision) -> None:
        tokens = event.prompt_tokens + event.completion_tokens
        alerts = await self.guard.charge_tokens(
            event.envelope.event_id,
            event.envelope.tenant_id,
            event.agent,
            tokens,
            now=event.envelope.occurred_at.timestamp(),
        )
        for alert in alerts:
            metrics.TENANT_SPEND_RATIO.labels(alert.tenant_id).set(alert.share)
            await self._events.publish(topics.GUARD_FLAGS, self._alert(event, alert))

    def _approval_event(self, event: ToolCallRequested, ask: ToolAsk, approval: ApprovalAsk) -> ApprovalRequested:
        action = approval.action
        return ApprovalRequested(
            # One approval per action, however often it is asked (a redelivery, the step re-run): the approval
            # service keeps the first.
            envelope=self._envelope(event, "approval").model_copy(
                update={"event_id": stable_event_id(approval.approval_id, "approval-requested")}
            ),
            approval_id=approval.approval_id,
            call_id=action.idempotency_key,
            agent=action.agent,
            tool=action.tool,
            arguments_json=action.arguments_json,
            reason=approval.reason,
            required_approvals=approval.required_approvals,
            expires_at=datetime.fromtimestamp(approval.expires_at, UTC),
            fallback=ApprovalFallback.ESCALATE if approval.on_expiry == "escalate" else ApprovalFallback.DENY,
            workflow_type=approval.workflow_type,
            queue=approval.queue,
            escalate_to=approval.escalate_to,
            action_digest=action.digest(),
            arguments_sha256=action.arguments_sha256,
            context_sha256=action.context_sha256,
            policy_version=action.policy_version,
            step_version=action.step_version,
            tier=approval.tier.value,
            rationale=ask.rationale,
            confidence=ask.confidence,
            decision_type=ask.decision_type,
            preview_json=ask.preview_json,
            lineage=list(ask.lineage),
            bound_from_json=ask.bound_from_json,
            requested_at=datetime.fromtimestamp(approval.requested_at, UTC),
            requested_by=approval.requested_by,
        )

    def _envelope(self, cause: Event, what: str) -> Envelope:
        base = self._events.envelope(cause=cause)
        return base.model_copy(update={"event_id": stable_event_id(cause.envelope.event_id, "guard", what)})

    def _verdict_event(self, event: ToolCallRequested, verdict: GuardVerdict) -> Event:
        # The verdict's code is in its id: a request answered KILLED, then (after a resume) AUTHORIZED, keeps both.
        what = f"verdict-{verdict.code}"
        if verdict.authorized:
            assert verdict.grant is not None and verdict.tier is not None
            return ToolCallAuthorized(
                envelope=self._envelope(event, what),
                call_id=event.call_id,
                agent=event.agent,
                tool=event.tool,
                tier=verdict.tier,
                idempotency_key=event.idempotency_key,
                grant=verdict.grant.to_json(),
                policy_version=verdict.policy_version,
                policies=list(verdict.policies),
                cost_usd=verdict.cost_usd,
            )
        return ToolCallDenied(
            envelope=self._envelope(event, what),
            call_id=event.call_id,
            agent=event.agent,
            tool=event.tool,
            reason_code=verdict.code,
            reason=verdict.reason,
            policy_version=verdict.policy_version,
            policies=list(verdict.policies),
            failure_class=verdict.failure_class,
            approval_id=verdict.approval.approval_id if verdict.approval else None,
        )

    def _flag(self, cause: Event, kind: GuardFlagKind, detail: str, what: str, **figures: float) -> GuardFlagged:
        return GuardFlagged(
            envelope=self._envelope(cause, f"flag-{what}"),
            kind=kind,
            source=self._events.role,
            tool=getattr(cause, "tool", None),
            call_id=getattr(cause, "idempotency_key", None),
            figures=figures,
            detail=detail,
        )

    def _alert(self, cause: Event, alert: SpendAlert) -> GuardFlagged:
        self.spend_alerts += 1
        what = "the hard stop: further calls are denied today" if alert.share >= 1.0 else "an alert"
        return self._flag(
            cause,
            GuardFlagKind.SPEND_ALERT,
            f"tenant {alert.tenant_id} spent {alert.spent_usd:.4f} of {alert.limit_usd:.2f} USD on {alert.day} "
            f"({alert.share:.0%} reached: {what})",
            f"spend-{alert.day}-{alert.share}",
            spent_usd=alert.spent_usd,
            limit_usd=alert.limit_usd,
            share=alert.share,
        )
