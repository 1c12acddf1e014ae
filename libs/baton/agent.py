"""The agent runtime: one step's reasoning loop, with the guardrails that live outside the prompt.

No broker imports: the agent service feeds it a context and publishes what it returns.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.trace import SpanKind

from baton.context import canonical_bytes, context_sha256
from baton.contracts.models import FailureClass, PermissionTier, ToolProvenance
from baton.model import ModelClient, ModelError, ModelRequest, ToolResult
from baton.policy.grants import SignedGrant
from baton.policy.injection import InjectionFlag
from baton.policy.sanitize import Finding
from baton.telemetry import genai, metrics, tracing
from baton.tools.base import ToolError
from baton.tools.executor import CallReview, GuardDeniedError, ToolRun, escalates
from baton.workflows import AgentSpec, ToolSpec, WorkflowSpec, lookup


class StepToolRunner(Protocol):
    """Runs one step's tool calls (`baton.tools.executor.StepTools` over the registry and the ledger)."""

    @property
    def guarded(self) -> bool:
        """Whether the policy guard decides each call (then the runtime does not decide approval itself)."""
        ...

    async def run(
        self,
        spec: ToolSpec,
        arguments: Mapping[str, Any],
        ordinal: int,
        grant: SignedGrant | None = None,
        review: CallReview | None = None,
    ) -> ToolRun: ...

    async def refused(
        self, tool: str, arguments: Mapping[str, Any], ordinal: int, review: CallReview | None = None
    ) -> ToolError | None:
        """Ask the guard about a call that will not run (so its verdict is on record): its refusal, or None."""
        ...

    async def preview(self, spec: ToolSpec, arguments: Mapping[str, Any], ordinal: int = 0) -> dict[str, Any] | None:
        """The tool's dry run of a call (what it would change), for a reviewer; None when it offers none."""
        ...


def step_error_code(exc: ToolError) -> str:
    """How a failed call names the step's failure: the guard's denials by their rule, the rest as TOOL_<code>."""
    if isinstance(exc, GuardDeniedError):
        return exc.code if exc.code in ("APPROVAL_REQUIRED", "UNKNOWN_TOOL") else f"DENIED_{exc.code}"
    return f"TOOL_{exc.code}"


@dataclass(frozen=True)
class DecisionTrace:
    """One model decision, for the AgentDecision event."""

    decision_type: str
    input_context_sha256: str
    tools_considered: list[str]
    tool_selected: str | None
    confidence: float
    prompt_tokens: int
    completion_tokens: int
    output_context_sha256: str | None
    rationale: str


@dataclass(frozen=True)
class ToolFlags:
    """What the output screen found in one call's result: redacted PII (kinds, paths, counts) and injection flags."""

    tool: str
    key: str
    redactions: tuple[Finding, ...]
    injections: tuple[InjectionFlag, ...]


@dataclass
class StepOutcome:
    """What a step produced: a new context, or a classified failure."""

    succeeded: bool
    context: dict[str, Any] | None = None
    error_code: str | None = None
    error: str | None = None
    failure_class: FailureClass | None = None
    tokens: int = 0
    tool_calls: int = 0
    confidence: float | None = None
    decisions: list[DecisionTrace] = field(default_factory=list)
    # Context key -> the tool call whose result it holds (the last one stored under that key).
    provenance: dict[str, ToolProvenance] = field(default_factory=dict)
    flags: list[ToolFlags] = field(default_factory=list)
    # The approval the step waits for (APPROVAL_REQUIRED): the supervisor resumes the workflow once it is decided.
    approval_id: str | None = None
    # The tools that ran, in order (the behaviour baselines learn the agent's tool mix from them).
    tools: list[str] = field(default_factory=list)
    # How long the step took the agent (set by its handler).
    duration_s: float = 0.0

    def fail(self, failure_class: FailureClass | None, code: str, message: str) -> StepOutcome:
        self.succeeded = False
        self.failure_class = failure_class
        self.error_code = code
        self.error = message
        return self


@dataclass(frozen=True)
class BoundCall:
    """A tool call as the runtime executes it: bound values from the context, and where the model differed."""

    arguments: dict[str, Any]
    unresolved: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    unbound: list[str] = field(default_factory=list)

    @property
    def diverged(self) -> str:
        """What the model chose that the runtime does not execute ("" when nothing)."""
        return "; ".join(self.differing + self.unbound)


def _same(a: Any, b: Any) -> bool:
    # Equal as the idempotency key sees them: 500 and 500.0 alike, "500" and 500 not.
    try:
        return canonical_bytes({"v": a}) == canonical_bytes({"v": b})
    except ValueError:
        return False


def bind_arguments(tool: ToolSpec, context: Mapping[str, Any], chosen: Mapping[str, Any]) -> BoundCall:
    """Resolve a tool's declared bindings in the context and compare them with the model's chosen arguments.

    A bound argument always takes the context's value (one the model omits is filled in). An argument with
    no binding is the model's own: passed on to a READ tool, reported as `unbound` for a WRITE/IRREVERSIBLE one.
    """
    read = tool.tier is PermissionTier.READ
    arguments = {k: v for k, v in chosen.items() if k not in tool.args} if read else {}
    unresolved: list[str] = []
    differing: list[str] = []
    for name, path in tool.args.items():
        value = lookup(context, path)
        if value is None:
            unresolved.append(f"{name} (bound to context path {path!r})")
            continue
        arguments[name] = value
        if name in chosen and not _same(chosen[name], value):
            differing.append(f"{name}: the model chose {chosen[name]!r}, the context ({path}) says {value!r}")
    unbound = (
        [] if read else [f"{k}: {v!r} is not bound to the context" for k, v in chosen.items() if k not in tool.args]
    )
    return BoundCall(arguments, unresolved, differing, unbound)


async def run_step(
    *,
    workflow: WorkflowSpec,
    agent: AgentSpec,
    workflow_id: str,
    context: Mapping[str, Any],
    model: ModelClient,
    tools: StepToolRunner,
    attempt: int = 1,
    tool_schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> StepOutcome:
    """Run one agent step: ask the model, enforce tools, loops and confidence, execute tools idempotently."""
    budgets = workflow.budgets
    threshold = workflow.threshold_for(agent)
    ctx: dict[str, Any] = dict(context)
    history: list[ToolResult] = []
    fingerprints: Counter[str] = Counter()
    # Per tool, the distinct argument sets called in this step: a call's ordinal (and key) is its set's index, so
    # a repeated identical write replays the first and a re-run's n-th distinct call meets the first run's n-th.
    distinct: dict[str, list[str]] = {}
    outcome = StepOutcome(succeeded=False)
    considered = [t.name for t in agent.tools]
    max_iterations = max(4, 2 * len(agent.tools) + budgets.loop_threshold + 1)
    provider, model_name = genai.model_identity(model)
    for _ in range(max_iterations):
        input_hash = context_sha256(ctx)
        chat_attributes = {
            tracing.GEN_AI_OPERATION: "chat",
            tracing.GEN_AI_PROVIDER: provider,
            tracing.GEN_AI_REQUEST_MODEL: model_name,
            tracing.GEN_AI_AGENT_NAME: agent.name,
            "baton.workflow.id": workflow_id,
            "baton.context.sha256": input_hash,
        }
        with tracing.span(f"chat {model_name}", chat_attributes, kind=SpanKind.CLIENT) as chat:
            try:
                reply = await model.decide(
                    ModelRequest(
                        workflow_id=workflow_id,
                        agent=agent,
                        context=ctx,
                        history=history,
                        attempt=attempt,
                        tool_schemas=tool_schemas or {},
                    )
                )
            except ModelError as exc:
                tracing.failed(chat, exc.code, str(exc))
                cls = FailureClass.TRANSIENT if exc.transient else FailureClass.LOGIC
                return outcome.fail(cls, exc.code, str(exc))
            tracing.set_attributes(
                chat,
                {
                    tracing.GEN_AI_INPUT_TOKENS: reply.prompt_tokens,
                    tracing.GEN_AI_OUTPUT_TOKENS: reply.completion_tokens,
                    "baton.confidence": reply.confidence,
                    "baton.tool.selected": reply.tool.name if reply.tool else None,
                },
            )
        metrics.MODEL_TOKENS.labels(agent.name, model_name, "input").inc(reply.prompt_tokens)
        metrics.MODEL_TOKENS.labels(agent.name, model_name, "output").inc(reply.completion_tokens)
        outcome.tokens += reply.prompt_tokens + reply.completion_tokens
        outcome.confidence = (
            reply.confidence if outcome.confidence is None else min(outcome.confidence, reply.confidence)
        )
        trace = DecisionTrace(
            decision_type="finish" if reply.done else "select_tool",
            input_context_sha256=input_hash,
            tools_considered=considered,
            tool_selected=reply.tool.name if reply.tool else None,
            confidence=reply.confidence,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            output_context_sha256=None,
            rationale=reply.rationale,
        )
        if reply.tool is None:
            outcome.decisions.append(trace)
            if reply.confidence < threshold:
                return outcome.fail(
                    FailureClass.LOGIC,
                    "LOW_CONFIDENCE",
                    f"{agent.name} finished with confidence {reply.confidence:.2f}, below its threshold "
                    f"{threshold:.2f}: a human should review",
                )
            missing = [o for o in agent.outputs if o not in ctx]
            if missing:
                return outcome.fail(
                    FailureClass.LOGIC,
                    "OUTPUTS_MISSING",
                    f"{agent.name} finished without its declared outputs {missing}",
                )
            outcome.succeeded = True
            outcome.context = ctx
            outcome.decisions[-1] = _with_output(trace, ctx)
            return outcome
        choice = reply.tool
        spec = agent.tool(choice.name)
        if spec is None and tools.guarded:
            outcome.decisions.append(trace)
            seen = distinct.setdefault(choice.name, [])
            refusal = await tools.refused(choice.name, choice.arguments, len(seen))
            seen.append(f"refused-{len(seen)}")
            if refusal is None:  # never expected: the guard permits only granted tools
                refusal = ToolError("UNKNOWN_TOOL", f"{agent.name} is not given tool {choice.name!r}: it does not run")
            return outcome.fail(escalates(refusal), step_error_code(refusal), str(refusal))
        if spec is None:
            outcome.decisions.append(trace)
            return outcome.fail(
                FailureClass.LOGIC,
                "UNKNOWN_TOOL",
                f"{agent.name} asked for tool {choice.name!r}, which it is not given; its tools are {considered}",
            )
        # Bound to the context as received and verified, not to what this step's tools added since.
        call = bind_arguments(spec, context, choice.arguments)
        if call.unresolved:
            outcome.decisions.append(trace)
            return outcome.fail(
                FailureClass.LOGIC,
                "ARGUMENT_UNRESOLVED",
                f"{choice.name} declares arguments the verified context does not hold: {', '.join(call.unresolved)}; "
                "the step needs them in its input (check the task input or the agent before it)",
            )
        arguments = call.arguments
        if call.diverged and spec.tier is PermissionTier.READ:
            # A read runs on the bound values; the model's divergence stays on record in its decision.
            trace = DecisionTrace(**{**trace.__dict__, "rationale": f"{trace.rationale} [rebound: {call.diverged}]"})
        try:
            arguments_digest = context_sha256(arguments)
        except ValueError as exc:  # NaN, an integer past 2^53: nothing can run on arguments no one can hash
            outcome.decisions.append(trace)
            return outcome.fail(
                FailureClass.LOGIC, "BAD_ARGUMENTS", f"{choice.name}'s arguments cannot be canonicalised: {exc}"
            )
        fingerprint = f"{choice.name}:{arguments_digest}"
        fingerprints[fingerprint] += 1
        if fingerprints[fingerprint] > budgets.loop_threshold:
            outcome.decisions.append(trace)
            return outcome.fail(
                FailureClass.LOGIC,
                "LOOP_DETECTED",
                f"{agent.name} called {choice.name} with the same arguments {fingerprints[fingerprint]} times "
                f"(limit {budgets.loop_threshold}): circuit breaker tripped",
            )
        seen = distinct.setdefault(choice.name, [])
        if arguments_digest not in seen:
            seen.append(arguments_digest)
        ordinal = seen.index(arguments_digest)
        review = CallReview(
            rationale=reply.rationale,
            confidence=reply.confidence,
            decision_type=spec.decision_type,
            bound_from=dict(spec.args),
            preview=await tools.preview(spec, arguments, ordinal) if workflow.needs_approval(spec, arguments) else None,
        )
        # Approval is decided on what would run, never on the model's own numbers; a human who must look
        # anyway also sees where the model diverged.
        approved_bound = False
        if call.diverged and spec.tier is not PermissionTier.READ:
            if workflow.needs_approval(spec, arguments):
                # Asked of the guard when it decides (so the approval request is its own, on the bound arguments).
                refusal = await tools.refused(choice.name, arguments, ordinal, review) if tools.guarded else None
                # Permitted by the guard: humans approved exactly these bound arguments, which run below.
                approved_bound = refusal is None and tools.guarded
                if not approved_bound and (refusal is None or refusal.code == "APPROVAL_REQUIRED"):
                    outcome.decisions.append(trace)
                    if isinstance(refusal, GuardDeniedError):
                        outcome.approval_id = refusal.approval_id
                    return outcome.fail(
                        None,
                        "APPROVAL_REQUIRED",
                        f"{_approval_text(spec, arguments)}; the model proposed otherwise ({call.diverged})",
                    )
            if not approved_bound:
                outcome.decisions.append(trace)
                return outcome.fail(
                    FailureClass.LOGIC,
                    "ARGUMENT_NOT_BOUND",
                    f"{choice.name} is {spec.tier.value} and acts only on the verified context's values; refused, "
                    f"nothing ran: {call.diverged}",
                )
        if not tools.guarded and workflow.needs_approval(spec, arguments):
            outcome.decisions.append(trace)
            return outcome.fail(None, "APPROVAL_REQUIRED", _approval_text(spec, arguments))
        tool_attributes = {
            tracing.GEN_AI_OPERATION: "execute_tool",
            tracing.GEN_AI_TOOL_NAME: choice.name,
            tracing.GEN_AI_TOOL_TYPE: "function",
            # Sanitized (only when recorded): a span never holds what the guard would redact.
            tracing.GEN_AI_TOOL_CALL_ARGUMENTS: genai.sanitized_json(arguments) if tracing.enabled() else None,
            "baton.tool.tier": spec.tier.value,
            "baton.tool.ordinal": ordinal,
            "baton.workflow.id": workflow_id,
        }
        started = time.perf_counter()
        with tracing.span(f"execute_tool {choice.name}", tool_attributes) as tool_span:
            try:
                run = await tools.run(spec, arguments, ordinal, review=review)
            except GuardDeniedError as exc:
                metrics.TOOL_CALLS.labels(choice.name, "denied").inc()
                tracing.failed(tool_span, exc.code, str(exc))
                outcome.decisions.append(trace)
                outcome.approval_id = exc.approval_id if exc.code == "APPROVAL_REQUIRED" else None
                return outcome.fail(escalates(exc), step_error_code(exc), str(exc))
            except ToolError as exc:
                metrics.TOOL_CALLS.labels(choice.name, "error").inc()
                tracing.failed(tool_span, f"TOOL_{exc.code}", str(exc))
                outcome.decisions.append(trace)
                return outcome.fail(escalates(exc), f"TOOL_{exc.code}", f"{choice.name} failed: {exc}")
            tracing.set_attributes(tool_span, {tracing.GEN_AI_TOOL_CALL_ID: run.key})
        metrics.TOOL_CALLS.labels(choice.name, "ok").inc()
        metrics.TOOL_LATENCY.labels(choice.name).observe(time.perf_counter() - started)
        outcome.tool_calls += 1
        outcome.tools.append(choice.name)
        if run.redactions or run.injections:
            outcome.flags.append(ToolFlags(choice.name, run.key, run.redactions, run.injections))
        if run.injections:
            found = "; ".join(f"{f.path} ({f.rule})" for f in run.injections)
            outcome.decisions.append(
                DecisionTrace(**{**trace.__dict__, "rationale": f"{trace.rationale} [injection flagged: {found}]"})
            )
            return outcome.fail(
                None,
                "INJECTION_SUSPECTED",
                f"{choice.name}'s result holds instruction-like content at {found}: it is not fed to the model; "
                "a human reviews the content before the workflow goes on",
            )
        result = run.result
        history.append(ToolResult(choice.name, dict(arguments), result))
        ctx[spec.result_key] = result
        outcome.provenance[spec.result_key] = ToolProvenance(
            key=spec.result_key, tool=choice.name, call_id=run.key, result_sha256=context_sha256(result)
        )
        outcome.decisions.append(_with_output(trace, ctx))
    return outcome.fail(
        FailureClass.LOGIC, "NO_CONCLUSION", f"{agent.name} did not finish within {max_iterations} model turns"
    )


def _approval_text(spec: ToolSpec, arguments: Mapping[str, Any]) -> str:
    return (
        f"{spec.name} is {spec.tier.value} and its bound arguments {json.dumps(arguments, default=str)} "
        "need a human's approval before it runs"
    )


def _with_output(trace: DecisionTrace, ctx: Mapping[str, Any]) -> DecisionTrace:
    return DecisionTrace(**{**trace.__dict__, "output_context_sha256": context_sha256(dict(ctx))})
