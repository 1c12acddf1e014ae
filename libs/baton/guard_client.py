"""How an agent asks the policy guard: ToolCallRequested out, ToolCallAuthorized / ToolCallDenied back, over the bus.

Every agent process reads the verdict topic from its end (it only waits for answers to its own questions) and
matches verdicts by call id. A question that gets no answer is asked again with the same call id (the guard
answers a repeated call id with the verdict it gave, and charges once); one that stays unanswered fails the
call as TRANSIENT, so the supervisor retries the step later: no tool runs without a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

from baton import topics
from baton.bus.base import BusRecord, RetryLaterError, Subscription
from baton.context import context_sha256
from baton.contracts.models import (
    Event,
    FailureClass,
    ToolCallAuthorized,
    ToolCallDenied,
    ToolCallRequested,
)
from baton.messaging import EventBus, EventConsumer, RejectedEvent
from baton.policy.grants import SignedGrant
from baton.tools.base import ToolError
from baton.tools.executor import CallReview, CallToAsk, GuardDeniedError

Verdict = ToolCallAuthorized | ToolCallDenied


class GuardClient:
    """Asks the guard and waits for its verdict (started once per agent process, shared by its steps)."""

    def __init__(
        self, events: EventBus, *, timeout_s: float = 30.0, resend_after_s: float = 3.0, max_pending: int = 10_000
    ) -> None:
        self._events = events
        self._timeout_s = timeout_s
        self._resend_after_s = resend_after_s
        self._max_pending = max_pending
        self._pending: dict[str, asyncio.Future[Verdict]] = {}
        self._sub: Subscription | None = None
        self.asked = 0

    async def start(self) -> None:
        await self._events.bus.create_topics([topics.TOOL_REQUESTS, topics.TOOL_VERDICTS, topics.DEAD_LETTER])
        # Signature and producer checks as every consumer makes them: only the guard's verdicts count.
        consumer = EventConsumer(
            self._events, group_id=f"{self._events.producer}.verdicts", handler=self._on_verdict, traced=False
        )
        self._sub = await self._events.bus.subscribe(
            [topics.TOOL_VERDICTS], group_id=None, handler=consumer, from_end=True
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.stop()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    async def _on_verdict(self, event: Event, record: BusRecord) -> None:
        if not isinstance(event, ToolCallAuthorized | ToolCallDenied):
            raise RejectedEvent("UNEXPECTED_EVENT", f"{record.topic} carries verdicts; got {event.event_type}")
        future = self._pending.get(event.call_id)
        if future is not None and not future.done():
            future.set_result(event)

    async def ask(self, call: CallToAsk) -> SignedGrant:
        """The guard's grant for this call, or GuardDeniedError; ToolError GUARD_UNAVAILABLE (TRANSIENT) when the
        guard did not answer in time."""
        if self._sub is None:
            raise RuntimeError("GuardClient.start() was not awaited")
        if len(self._pending) >= self._max_pending:
            raise ToolError(
                "GUARD_BUSY",
                f"{len(self._pending)} calls already wait for the guard in this process: retried later",
                FailureClass.TRANSIENT,
            )
        arguments = dict(call.arguments)
        try:
            digest = context_sha256(arguments)
        except ValueError as exc:
            raise ToolError(
                "BAD_ARGUMENTS", f"the arguments for {call.tool} cannot be canonicalised ({exc}): nothing was asked"
            ) from exc
        request = ToolCallRequested(
            envelope=self._events.envelope(
                workflow_id=call.workflow_id, tenant_id=call.tenant_id, step_seq=call.step_version
            ),
            call_id=uuid.uuid4().hex,
            agent=call.agent,
            tool=call.tool,
            arguments_json=json.dumps(arguments, default=str),
            idempotency_key=call.idempotency_key,
            step_version=call.step_version,
            arguments_sha256=digest,
            step_ticket=call.step_ticket,
            lineage=list(call.lineage),
            approval_token=call.approval_token,
            **_review_fields(call.review),
        )
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending[request.call_id] = future
        self.asked += 1
        try:
            verdict = await self._wait(request, future)
        finally:
            self._pending.pop(request.call_id, None)
        if isinstance(verdict, ToolCallDenied):
            raise GuardDeniedError(
                verdict.reason_code,
                f"the policy guard denied {call.tool}: {verdict.reason} (policy {verdict.policy_version or '-'})",
                verdict.failure_class,
                approval_id=verdict.approval_id,
            )
        try:
            return SignedGrant.from_json(verdict.grant)
        except (ValueError, KeyError, TypeError) as exc:
            raise ToolError("GRANT_MALFORMED", f"the guard's grant for {call.tool} cannot be read: {exc}") from exc

    async def _wait(self, request: ToolCallRequested, future: asyncio.Future[Verdict]) -> Verdict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        while True:
            try:
                await self._events.publish(topics.TOOL_REQUESTS, request)
                wait = min(self._resend_after_s, deadline - loop.time())
            except RetryLaterError:
                # Not acknowledged: asked again shortly (the same call id; the guard answers a repeat once).
                wait = min(0.1, deadline - loop.time())
            except ValueError as exc:  # e.g. MessageTooLargeError: asking again cannot help
                raise ToolError("REQUEST_REFUSED", f"the request for {request.tool} cannot be sent: {exc}") from exc
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(future), max(wait, 0.0))
            if loop.time() >= deadline:
                raise ToolError(
                    "GUARD_UNAVAILABLE",
                    f"the policy guard did not answer for {request.tool} within {self._timeout_s:.0f} s: nothing ran; "
                    "the step is retried later (is the policy-guard service running?)",
                    FailureClass.TRANSIENT,
                )


def _review_fields(review: CallReview | None) -> dict[str, Any]:
    """What a reviewer would read, as ToolCallRequested fields (none when the agent sent no review)."""
    if review is None:
        return {}
    return {
        "rationale": review.rationale,
        "confidence": review.confidence,
        "decision_type": review.decision_type,
        "bound_from_json": json.dumps(dict(review.bound_from), sort_keys=True),
        "preview_json": json.dumps(review.preview, default=str) if review.preview is not None else None,
    }
