"""The supervisor's workflow state machine: budgets, failure classes, retries, checkpoints.

Pure: `Supervisor.handle(event, now)` computes a transition on a copy of the workflow's state and
returns it with the effects to publish; the service publishes the checkpoint, then the effects, and
only once the bus acknowledged them calls `Supervisor.commit`. A publish that fails leaves the held
state as it was, so the retried event is decided again from the same state (the same ids, which
consumers dedupe). No broker imports.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import TypeAdapter

from baton.context import make_snapshot
from baton.contracts.models import (
    ApprovalDecided,
    ApprovalDecision,
    ContextDiff,
    ContextSnapshot,
    Event,
    FailureClass,
    HandoffAccepted,
    HandoffRejected,
    StepCompleted,
    TaskRequested,
    WorkflowCheckpointed,
    stable_event_id,
)
from baton.control import KILLED
from baton.handoff import DEFAULT_MAX_CONTEXT_BYTES, verify_snapshot_integrity
from baton.workflows import END, WorkflowSpec

if TYPE_CHECKING:
    from baton.policy.admission import Rejected

Status = Literal["running", "completed", "halted", "escalated"]
MAX_EARLY_DECISIONS = 8
# Task admission (baton.policy.admission.TaskAdmission): (workflow type, tenant, input, now) -> a rejection or
# None. Asked once a task is otherwise ready to start; a rejected task is refused like a bad one.
AdmitTask = Callable[[str, str, Mapping[str, Any], float], "Rejected | None"]


class UnknownWorkflowError(ValueError):
    """An event names a workflow this supervisor neither runs nor finished; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class WorkflowState:
    """Everything the supervisor knows about one workflow; persisted in every checkpoint."""

    workflow_id: str
    tenant_id: str
    workflow_type: str
    correlation_id: str
    started_at: float
    snapshot: dict[str, Any]
    current_agent: str
    status: Status = "running"
    attempt: int = 1
    seq: int = 0
    completed_steps: list[str] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    tool_calls: int = 0
    context_retries: int = 0
    transient_retries: int = 0
    consecutive_errors: int = 0
    last_error: str | None = None
    retry_at: float | None = None
    outcome_code: str | None = None
    last_result: str | None = None  # "agent:attempt" of the last step result counted
    # The outcome decided, checkpointed before it is published: re-sent as it is until the final
    # checkpoint lands, so one workflow never gets two different outcomes under one event id.
    pending_outcome: dict[str, Any] | None = None
    # The approval the workflow waits for (checkpointed: nothing is asked of any agent until it is decided), and
    # once approved, the approval service's token the resumed step shows the guard.
    awaiting_approval: str | None = None
    approval_token: str = ""
    # Time spent waiting for humans, which the wall-clock budget does not count (the approval's SLA bounds it).
    awaiting_since: float | None = None
    waited_s: float = 0.0
    # Decisions that arrived before the step result asking for them (applied when it does), and the approvals
    # this workflow already resumed on (a redelivered decision resumes nothing); both small and bounded.
    early_decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    approvals_done: list[str] = field(default_factory=list)
    # Who submitted the task (TaskRequested.requested_by): the requesting side, which never approves its own action.
    requested_by: str = ""
    # The trace context the task was handled in (W3C traceparent): the workflow's span joins that trace when the
    # workflow ends, on whichever replica holds it then.
    traceparent: str = ""

    def running_s(self, now: float) -> float:
        """How long the workflow has been running, not counting its waits for approvals."""
        waiting = now - self.awaiting_since if self.awaiting_since is not None else 0.0
        return now - self.started_at - self.waited_s - waiting

    @property
    def checkpoint(self) -> ContextSnapshot:
        return ContextSnapshot.model_validate(self.snapshot)

    def copy(self) -> WorkflowState:
        """A copy a transition may change without touching the held state."""
        return replace(
            self,
            completed_steps=list(self.completed_steps),
            early_decisions=dict(self.early_decisions),
            approvals_done=list(self.approvals_done),
        )

    def to_json(self) -> str:
        """Everything but the context snapshot, which the checkpoint carries once, in its own field."""
        # Not dataclasses.asdict: it deep-copies the snapshot (the whole context) only to drop it.
        return json.dumps({name: getattr(self, name) for name in _STATE_FIELDS}, sort_keys=True)

    @classmethod
    def from_checkpoint(cls, event: WorkflowCheckpointed) -> WorkflowState:
        """The state a checkpoint carries; raises ValueError when it does not parse."""
        try:
            loaded = json.loads(event.supervisor_state_json)
            if not isinstance(loaded, dict):
                raise TypeError(f"supervisor_state_json is a {type(loaded).__name__}, not an object")
            loaded["snapshot"] = event.snapshot.model_dump()
            state = _STATE.validate_python(loaded)  # types checked: a wrong one must not reach the sweep
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"checkpoint of {event.envelope.workflow_id} holds no valid supervisor state: {exc}"
            ) from exc
        if state.workflow_id != event.envelope.workflow_id:
            raise ValueError(f"checkpoint keyed {event.envelope.workflow_id} holds the state of {state.workflow_id}")
        return state


_STATE: TypeAdapter[WorkflowState] = TypeAdapter(WorkflowState)
_STATE_FIELDS = tuple(f.name for f in fields(WorkflowState) if f.name != "snapshot")


def proposal_event_id(workflow_id: str, agent: str, context_version: int, attempt: int) -> str:
    """Event id of the handoff an agent proposes after one attempt of a step (the agent's step key)."""
    return stable_event_id(f"{workflow_id}:{agent}:{context_version}:{attempt}", "handoff")


@dataclass(frozen=True)
class RequestStep:
    """Ask an agent to run from the checkpoint (after delay_s); diff is what the last handoff changed."""

    agent: str
    attempt: int
    delay_s: float = 0.0
    diff: ContextDiff | None = None


@dataclass(frozen=True)
class Outcome:
    kind: Literal["completed", "halted", "escalated"]
    reason_code: str
    reason: str
    failure_class: FailureClass | None = None


Effect = RequestStep | Outcome


def pending_outcome(state: WorkflowState) -> Outcome | None:
    """The outcome a state has decided but not yet finished with."""
    if state.pending_outcome is None:
        return None
    raw = dict(state.pending_outcome)
    cls = raw.pop("failure_class", None)
    return Outcome(**raw, failure_class=FailureClass(cls) if cls else None)


@dataclass(frozen=True)
class Transition:
    """What handling one event did: the new state (None: ignored) and the effects to publish."""

    state: WorkflowState | None
    effects: tuple[Effect, ...] = ()
    replay: bool = False  # re-emits what the held state already owes: no new checkpoint
    # A verdict that overtook its step's result (they travel on different topics): hold it until the
    # result is counted, or a step's tokens and tool calls would escape the budgets.
    early: bool = False


def backoff_s(retry: int, *, base_s: float, cap_s: float, jitter_key: str) -> float:
    """Exponential backoff with deterministic jitter (so a replayed decision waits the same)."""
    frac = hashlib.sha256(jitter_key.encode()).digest()[0] / 255
    return float(min(cap_s, base_s * 2 ** (retry - 1)) * (0.5 + frac / 2))


class Supervisor:
    """Decides every workflow transition; holds the running workflows it owns and tombstones of finished ones."""

    def __init__(
        self,
        workflows: dict[str, WorkflowSpec],
        *,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
        finished_capacity: int = 10_000,
        admit: AdmitTask | None = None,
        await_approvals: bool = True,
    ) -> None:
        self.workflows = workflows
        self.admit = admit
        self.await_approvals = await_approvals
        self.states: dict[str, WorkflowState] = {}
        # Finished workflows as (seq, outcome code), oldest first: enough to ignore a redelivered task or
        # a late verdict without holding the workflow itself; bounded so memory stays flat.
        self.finished: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_context_bytes = max_context_bytes
        self.finished_capacity = finished_capacity

    def commit(self, state: WorkflowState) -> bool:
        """Hold a state whose checkpoint and effects were acknowledged (or read from a checkpoint).

        Ignored (False) when the state held for that workflow is as new or newer.
        """
        wf = state.workflow_id
        known = self.states.get(wf)
        done = self.finished.get(wf)
        if (known is not None and known.seq >= state.seq) or (done is not None and done[0] >= state.seq):
            return False
        if state.status == "running":
            self.states[wf] = state
            return True
        self.states.pop(wf, None)
        self.finished[wf] = (state.seq, state.outcome_code or state.status)
        self.finished.move_to_end(wf)
        while len(self.finished) > self.finished_capacity:
            self.finished.popitem(last=False)
        return True

    restore = commit

    def forget(self, workflow_ids: set[str]) -> None:
        """Drop workflows whose partitions moved to another replica."""
        for wf in workflow_ids:
            self.states.pop(wf, None)
            self.finished.pop(wf, None)

    def handle(self, event: Event, now: float) -> Transition:
        """Decide what an event does; the held state changes only when the caller commits the result."""
        if isinstance(event, TaskRequested):
            return self._task(event, now)
        wf = event.envelope.workflow_id
        held = self.states.get(wf)
        if held is None:
            if wf in self.finished or isinstance(event, ApprovalDecided):
                # A late or duplicate event of a finished workflow; or a decision on an approval whose workflow
                # ended meanwhile (killed, halted) or is long forgotten: nothing waits for it.
                return Transition(None)
            raise UnknownWorkflowError(
                "UNKNOWN_WORKFLOW",
                f"{event.event_type} for workflow {wf!r}, which this supervisor never started (or whose "
                "record it no longer keeps): it was not produced by Baton for a live workflow",
            )
        if event.envelope.tenant_id != held.tenant_id:
            raise UnknownWorkflowError(
                "TENANT_MISMATCH",
                f"{event.event_type} for workflow {wf!r} says tenant {event.envelope.tenant_id!r}, "
                f"but the workflow belongs to tenant {held.tenant_id!r}",
            )
        owed = pending_outcome(held)
        if owed is not None:
            return Transition(held.copy(), (owed,), replay=True)  # decided already: finish that, nothing new
        state = held.copy()
        if isinstance(event, StepCompleted):
            return self._step_completed(state, event, now)
        if isinstance(event, HandoffAccepted):
            return self._accepted(state, event, now)
        if isinstance(event, HandoffRejected):
            return self._rejected(state, event)
        if isinstance(event, ApprovalDecided):
            return self._approval_decided(state, event, now)
        return Transition(None)

    # -- transitions -------------------------------------------------------------------------------

    def _task(self, event: TaskRequested, now: float) -> Transition:
        wf = event.envelope.workflow_id
        existing = self.states.get(wf)
        if existing is not None:
            if event.envelope.tenant_id != existing.tenant_id:
                raise UnknownWorkflowError(
                    "TENANT_MISMATCH",
                    f"task {wf!r} of tenant {event.envelope.tenant_id!r} names a workflow of tenant "
                    f"{existing.tenant_id!r}: use a workflow id (or idempotency key) of your own",
                )
            # Redelivered task: re-emit what a running workflow waits for (idempotent downstream).
            owed = pending_outcome(existing)
            effect: Effect = owed if owed is not None else RequestStep(existing.current_agent, existing.attempt)
            return Transition(existing.copy(), (effect,), replay=True)
        if wf in self.finished:
            return Transition(None)  # a finished one owes nothing, not even another checkpoint
        spec = self.workflows.get(event.workflow_type)
        if spec is None:
            return self._refuse(
                event,
                now,
                "UNKNOWN_WORKFLOW_TYPE",
                f"workflow type {event.workflow_type!r} is not declared; declared types: {sorted(self.workflows)}",
            )
        size = len(event.input_json.encode())
        if size > self.max_context_bytes:
            return self._refuse(
                event,
                now,
                "CONTEXT_TOO_LARGE",
                f"input_json is {size} bytes, over the {self.max_context_bytes}-byte context limit: pass "
                "references (ids, URLs) to large documents instead of their content",
            )
        try:
            context = json.loads(event.input_json)
        except json.JSONDecodeError as exc:
            return self._refuse(event, now, "BAD_INPUT", f"input_json is not JSON ({exc}); send a JSON object")
        if not isinstance(context, dict):
            return self._refuse(
                event, now, "BAD_INPUT", f"input_json is a {type(context).__name__}; send a JSON object"
            )
        first = spec.agent(spec.first_agent)
        missing = [k for k in first.inputs if k not in context]
        if missing:
            return self._refuse(
                event,
                now,
                "BAD_INPUT",
                f"{spec.name} starts with {first.name}, which needs {first.inputs}; missing: {missing}",
            )
        try:
            snapshot = make_snapshot(context, version=1)
        except ValueError as exc:
            return self._refuse(event, now, "BAD_INPUT", f"input_json cannot be hashed canonically: {exc}")
        if snapshot.size_bytes > self.max_context_bytes:
            return self._refuse(
                event,
                now,
                "CONTEXT_TOO_LARGE",
                f"the context is {snapshot.size_bytes} bytes in canonical form, over the {self.max_context_bytes}-byte "
                "limit: pass references (ids, URLs) to large documents instead of their content",
            )
        if self.admit is not None:
            # Last: a task refused for its input never counts against its tenant's rate.
            rejected = self.admit(spec.name, event.envelope.tenant_id, context, now)
            if rejected is not None:
                return self._refuse(event, now, rejected.outcome_code, rejected.reason)
        state = WorkflowState(
            workflow_id=wf,
            tenant_id=event.envelope.tenant_id,
            workflow_type=spec.name,
            correlation_id=event.envelope.correlation_id or wf,
            started_at=now,
            snapshot=snapshot.model_dump(),
            current_agent=first.name,
            requested_by=event.requested_by,
        )
        return self._advance(state, RequestStep(first.name, 1))

    def _refuse(
        self,
        event: TaskRequested,
        now: float,
        code: str,
        reason: str,
        failure_class: FailureClass | None = FailureClass.LOGIC,
    ) -> Transition:
        """A task that cannot start still gets exactly one outcome (halted, with what to fix)."""
        wf = event.envelope.workflow_id
        state = WorkflowState(
            workflow_id=wf,
            tenant_id=event.envelope.tenant_id,
            workflow_type=event.workflow_type,
            correlation_id=event.envelope.correlation_id or wf,
            started_at=now,
            snapshot=make_snapshot({}, version=0).model_dump(),
            current_agent="",
        )
        return self._finish(state, Outcome("halted", code, f"task rejected: {reason}", failure_class))

    def _step_completed(self, state: WorkflowState, event: StepCompleted, now: float) -> Transition:
        result_key = f"{event.agent}:{event.attempt}"
        if event.agent != state.current_agent or event.attempt != state.attempt or state.last_result == result_key:
            return Transition(None)  # a late result of an earlier attempt, or one already counted
        state.last_result = result_key
        spec = self.workflows[state.workflow_type]
        budgets = spec.budgets
        state.steps += 1
        state.tokens += event.tokens_used
        state.tool_calls += event.tool_calls
        if event.error_code in (KILLED, f"TOOL_{KILLED}", f"DENIED_{KILLED}"):  # the agent, its tool gate, the guard
            # The agent saw the kill switch before this supervisor did: the same outcome as its own kill.
            return self._finish(state, Outcome("halted", KILLED, event.error or KILLED))
        tripped = self._budget_trip(state, spec, now)
        if tripped is not None:
            return self._finish(state, tripped)
        if event.succeeded:
            state.consecutive_errors = 0
            return self._advance(state)  # the handoff verdict moves the workflow on
        code = event.error_code or "STEP_FAILED"
        if code == "APPROVAL_REQUIRED" and event.approval_id and self.await_approvals:
            if event.approval_id in state.approvals_done:
                # Decided already, yet asked again: its token expired or no longer verifies. The approval service
                # keeps the first request of an id, so nobody would ever decide it again: a human looks.
                return self._finish(
                    state,
                    Outcome(
                        "escalated",
                        "APPROVAL_NOT_HONOURED",
                        f"approval {event.approval_id} was decided, but the guard asked for it again (its token "
                        f"expired or no longer verifies): {event.error or code}",
                    ),
                )
            # Checkpointed as waiting; nothing else of this workflow happens until the decision arrives, and no
            # other workflow waits for it.
            state.awaiting_approval = event.approval_id
            state.approval_token = ""
            state.awaiting_since = now
            early = state.early_decisions.pop(event.approval_id, None)
            if early is not None:
                return self._resume(state, event.approval_id, early, now)  # decided before the step said it waits
            return self._advance(state)
        state.consecutive_errors = state.consecutive_errors + 1 if state.last_error == code else 1
        state.last_error = code
        reason = event.error or code
        if state.consecutive_errors >= budgets.max_consecutive_errors:
            return self._finish(
                state,
                Outcome(
                    "halted",
                    "CONSECUTIVE_ERRORS",
                    f"{code} {state.consecutive_errors} times in a row: {reason}",
                    event.failure_class,
                ),
            )
        if event.failure_class is None:
            # No class: the agent says a human must decide (an approval, a write it will not repeat on its own).
            return self._finish(state, Outcome("escalated", code, reason))
        if code == "LOOP_DETECTED":
            return self._finish(state, Outcome("halted", "BUDGET_LOOP", reason, FailureClass.LOGIC))
        cls = event.failure_class or FailureClass.LOGIC
        if cls is FailureClass.TRANSIENT:
            if state.transient_retries >= budgets.max_transient_retries:
                return self._finish(
                    state,
                    Outcome(
                        "escalated",
                        "TRANSIENT_RETRIES_EXHAUSTED",
                        f"{reason} after {state.transient_retries} retries",
                        cls,
                    ),
                )
            state.transient_retries += 1
            delay = backoff_s(
                state.transient_retries,
                base_s=self.backoff_base_s,
                cap_s=self.backoff_cap_s,
                jitter_key=f"{state.workflow_id}:{state.seq}",
            )
            state.attempt += 1
            state.retry_at = now + delay
            return self._advance(state, RequestStep(state.current_agent, state.attempt, delay))
        if cls is FailureClass.CONTEXT:
            return self._context_retry(state, reason)
        if cls is FailureClass.SYSTEMIC:
            return self._finish(state, Outcome("halted", code, reason, cls))
        fallback = spec.agent(state.current_agent).fallback_agent
        if fallback and fallback != state.current_agent:
            state.current_agent = fallback
            state.attempt += 1
            return self._advance(state, RequestStep(fallback, state.attempt))
        return self._finish(state, Outcome("escalated", code, reason, cls))

    def _approval_decided(self, state: WorkflowState, event: ApprovalDecided, now: float) -> Transition:
        """Resume a workflow waiting for this approval (see `_resume`). A decision can overtake the step result
        that asks for it (they travel on different topics, and a reviewer may be quick): one for a workflow not
        waiting yet is kept in its checkpoint and applied when the step's result names it."""
        decided = {
            "decision": event.decision.value,
            "approval_token": event.approval_token,
            "decided_by": list(event.decided_by),
            "comment": event.comment,
        }
        if state.awaiting_approval == event.approval_id:
            return self._resume(state, event.approval_id, decided, now)
        if (
            state.awaiting_approval is None
            and event.approval_id not in state.approvals_done
            and event.approval_id not in state.early_decisions
            and len(state.early_decisions) < MAX_EARLY_DECISIONS
        ):
            state.early_decisions[event.approval_id] = decided
            return self._advance(state)
        return Transition(None)  # a redelivered decision, or one for an approval this workflow no longer awaits

    def _resume(self, state: WorkflowState, approval_id: str, decided: Mapping[str, Any], now: float) -> Transition:
        """Approved: the step runs again showing the approval (the approved action runs once: its idempotency key
        is the one the guard asked about). Rejected or expired: the workflow halts with the reviewers' reason."""
        state.awaiting_approval = None
        state.approvals_done = [*state.approvals_done, approval_id][-MAX_EARLY_DECISIONS:]
        if state.awaiting_since is not None:
            state.waited_s += max(0.0, now - state.awaiting_since)
            state.awaiting_since = None
        who = ", ".join(decided["decided_by"]) or "nobody"
        comment = decided["comment"]
        if decided["decision"] == ApprovalDecision.APPROVED.value:
            usable_until = _token_expiry(decided["approval_token"])
            if usable_until is not None and usable_until < now:
                return self._finish(
                    state,
                    Outcome(
                        "halted",
                        "APPROVAL_EXPIRED",
                        f"approval {approval_id} by {who} reached the workflow after its token expired: ask again",
                    ),
                )
            state.approval_token = decided["approval_token"]
            state.attempt += 1
            state.retry_at = None
            return self._advance(state, RequestStep(state.current_agent, state.attempt))
        if decided["decision"] == ApprovalDecision.REJECTED.value:
            return self._finish(
                state,
                Outcome(
                    "halted",
                    "APPROVAL_REJECTED",
                    f"approval {approval_id} rejected by {who}: {comment or 'no reason given'}",
                ),
            )
        return self._finish(
            state,
            Outcome(
                "halted",
                "APPROVAL_EXPIRED",
                f"approval {approval_id} was not decided in time: {comment or 'its SLA passed'}",
            ),
        )

    def _accepted(self, state: WorkflowState, event: HandoffAccepted, now: float) -> Transition:
        cp = state.checkpoint
        snap = event.snapshot
        if (
            event.from_agent != state.current_agent
            or snap.version != cp.version + 1
            or snap.parent_sha256 != cp.sha256
            or not self._answers_current_attempt(state, event)
        ):
            return Transition(None)  # duplicate or late verdict
        if state.last_result != f"{state.current_agent}:{state.attempt}":
            return Transition(None, early=True)
        # Adopted only if it verifies here too: a verdict can be forged or replayed, and the checkpoint
        # is what every later step is rebuilt from.
        refused, context = verify_snapshot_integrity(snap, max_bytes=self.max_context_bytes)
        if refused is not None:
            return self._finish(
                state,
                Outcome(
                    "halted",
                    "UNVERIFIED_CONTEXT",
                    f"the accepted handoff from {event.from_agent} was not adopted: {refused.code}: {refused.reason}",
                    FailureClass.CONTEXT,
                ),
            )
        spec = self.workflows[state.workflow_type]
        expected = spec.next_agent(state.current_agent, context)
        if event.to_agent != expected:
            return self._finish(
                state,
                Outcome(
                    "escalated",
                    "ROUTING_MISMATCH",
                    f"{state.current_agent} handed off to {event.to_agent}, but {spec.name} routes to {expected}",
                    FailureClass.LOGIC,
                ),
            )
        state.snapshot = snap.model_dump()
        state.completed_steps.append(state.current_agent)
        state.current_agent = event.to_agent
        state.attempt = 1
        state.last_result = None
        state.context_retries = 0
        state.transient_retries = 0
        state.retry_at = None
        state.approval_token = ""
        state.early_decisions = {}
        tripped = self._budget_trip(state, spec, now)
        if tripped is not None:
            return self._finish(state, tripped)
        if event.to_agent == END:
            return self._finish(state, Outcome("completed", "COMPLETED", f"{len(state.completed_steps)} steps"))
        # The verified context goes to the next agent only once it is checkpointed here.
        return self._advance(state, RequestStep(event.to_agent, 1, diff=event.diff))

    def _rejected(self, state: WorkflowState, event: HandoffRejected) -> Transition:
        if event.from_agent != state.current_agent or event.expected_parent_sha256 not in (
            None,
            state.checkpoint.sha256,
        ):
            return Transition(None)
        if not self._answers_current_attempt(state, event):
            return Transition(None)  # a verdict on an earlier attempt, redelivered
        if state.last_result != f"{state.current_agent}:{state.attempt}":
            return Transition(None, early=True)
        if event.envelope.causation_id is not None and state.last_error == f"rejected:{event.envelope.causation_id}":
            return Transition(None)  # the same rejection redelivered
        state.last_error = f"rejected:{event.envelope.causation_id}"
        return self._context_retry(state, f"{event.reason_code}: {event.reason}")

    @staticmethod
    def _answers_current_attempt(state: WorkflowState, verdict: HandoffAccepted | HandoffRejected) -> bool:
        """Whether a verdict judges the proposal of the attempt the workflow is on now."""
        expected = proposal_event_id(state.workflow_id, state.current_agent, state.checkpoint.version, state.attempt)
        return verdict.envelope.causation_id == expected

    def _context_retry(self, state: WorkflowState, reason: str) -> Transition:
        budgets = self.workflows[state.workflow_type].budgets
        if state.context_retries >= budgets.context_retries:
            return self._finish(
                state,
                Outcome(
                    "escalated",
                    "CONTEXT_RETRY_EXHAUSTED",
                    f"context failed again after {state.context_retries} rebuild(s): {reason}",
                    FailureClass.CONTEXT,
                ),
            )
        state.context_retries += 1
        state.attempt += 1
        # Rebuild from the last good checkpoint: the step re-runs on the checkpointed context.
        return self._advance(state, RequestStep(state.current_agent, state.attempt))

    # -- helpers -----------------------------------------------------------------------------------

    def _budget_trip(self, state: WorkflowState, spec: WorkflowSpec, now: float) -> Outcome | None:
        b = spec.budgets
        cost = state.tokens / 1000 * b.cost_per_1k_tokens_usd
        checks = [
            (state.steps > b.max_steps, "BUDGET_STEPS", f"{state.steps} steps > {b.max_steps}"),
            (state.tokens > b.max_tokens, "BUDGET_TOKENS", f"{state.tokens} tokens > {b.max_tokens}"),
            (
                state.tool_calls > b.max_tool_calls,
                "BUDGET_TOOL_CALLS",
                f"{state.tool_calls} tool calls > {b.max_tool_calls}",
            ),
            (cost > b.max_cost_usd, "BUDGET_COST", f"${cost:.4f} > ${b.max_cost_usd}"),
            (
                state.running_s(now) > b.wall_clock_s,
                "BUDGET_WALL_CLOCK",
                f"{state.running_s(now):.0f}s > {b.wall_clock_s:.0f}s",
            ),
        ]
        for tripped, code, detail in checks:
            if tripped:
                return Outcome("halted", code, f"budget exceeded: {detail}; escalated to {spec.escalation.queue}")
        return None

    def wall_clock_halt(self, workflow_id: str, now: float) -> Transition | None:
        """The halt of a held workflow past its wall-clock budget (commit it), or None while it is within."""
        held = self.states.get(workflow_id)
        if held is None or held.pending_outcome is not None or held.awaiting_approval is not None:
            # Not held, or decided already (finishing it is owed, not a new decision), or waiting for humans (whose
            # time the approval's SLA bounds, with its declared fallback).
            return None
        spec = self.workflows[held.workflow_type]
        if held.running_s(now) <= spec.budgets.wall_clock_s:
            return None
        outcome = Outcome(
            "halted",
            "BUDGET_WALL_CLOCK",
            f"no outcome within {spec.budgets.wall_clock_s:.0f}s; escalated to {spec.escalation.queue}",
        )
        return self._finish(held.copy(), outcome)

    def halt(self, state: WorkflowState, code: str, reason: str, failure_class: FailureClass | None) -> Transition:
        """Halt a workflow in the state a transition just produced, instead of what it was about to ask for."""
        return self._finish(state, Outcome("halted", code, reason, failure_class))

    def kill(self, workflow_id: str, reason: str) -> Transition | None:
        """The halt of a held running workflow by the kill switch (commit it); None: not held, or decided already."""
        held = self.states.get(workflow_id)
        if held is None or held.pending_outcome is not None:
            return None
        return self._finish(held.copy(), Outcome("halted", KILLED, reason))

    def killed(self, event: Event, why: str, now: float) -> Transition | None:
        """What an event of a workflow the kill switch covers does: a new task is refused (one halted outcome,
        no step), a held running workflow is halted; None: nothing new (finished, or its outcome decided)."""
        wf = event.envelope.workflow_id
        if isinstance(event, TaskRequested) and wf not in self.states and wf not in self.finished:
            return self._refuse(event, now, KILLED, why, failure_class=None)
        return self.kill(wf, why)

    def check_wall_clock(self, now: float) -> list[Transition]:
        """Halts of running workflows past their wall-clock budget (called periodically; commit each)."""
        return [t for wf in list(self.states) if (t := self.wall_clock_halt(wf, now)) is not None]

    def _advance(self, state: WorkflowState, *effects: Effect) -> Transition:
        state.seq += 1
        return Transition(state, effects)

    def _finish(self, state: WorkflowState, outcome: Outcome) -> Transition:
        """Decide the outcome: checkpointed as pending, published, then made final (see `finalize`)."""
        state.pending_outcome = {
            "kind": outcome.kind,
            "reason_code": outcome.reason_code,
            "reason": outcome.reason,
            "failure_class": outcome.failure_class.value if outcome.failure_class else None,
        }
        state.seq += 1
        return Transition(state, (outcome,))

    @staticmethod
    def finalize(state: WorkflowState) -> WorkflowState:
        """The finished state that follows a pending outcome once the outcome was published."""
        owed = pending_outcome(state)
        if owed is None:
            raise ValueError(f"{state.workflow_id} has no pending outcome to finalize")
        final = state.copy()
        final.status = owed.kind
        final.outcome_code = owed.reason_code
        final.seq += 1
        return final


def _token_expiry(token: str) -> float | None:
    """When an approval token stops being accepted (its signature is the guard's business, not read here)."""
    try:
        return float(json.loads(token)["approval"]["expires_at"])
    except (ValueError, KeyError, TypeError):
        return None


def effect_event_id(state: WorkflowState, effect: Effect) -> str:
    """Deterministic event id of an effect, so re-emitting it is deduplicated downstream."""
    if isinstance(effect, RequestStep):
        key = f"step:{state.workflow_id}:{effect.agent}:{state.checkpoint.version}:{effect.attempt}"
    else:
        key = f"outcome:{state.workflow_id}"
    return stable_event_id(key)
