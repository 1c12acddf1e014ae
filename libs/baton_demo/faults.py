"""Fault plans: which workflow gets which injected fault at which agent (demo, tests, chaos runs)."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from baton.context import canonical_bytes, context_sha256, load_context, make_snapshot
from baton.contracts.models import ContextSnapshot, HandoffProposed
from baton.model import MalformedOutputError, ModelClient, ModelReply, ModelRequest, RateLimitedError, ToolChoice
from baton.workflows import AgentSpec, lookup


class Fault(StrEnum):
    # handoff faults, caught by the handoff validator
    TRUNCATE = "truncate"
    STALE = "stale"
    TAMPER = "tamper"
    # a compromised agent that recomputes the hash, caught by the validator's ownership and provenance rules
    REWRITE_UPSTREAM = "rewrite_upstream"
    SWAP_RECORD = "swap_record"
    HOLLOW = "hollow"
    # model faults, caught by the agent runtime and the supervisor
    LOOP = "loop"
    UNKNOWN_TOOL = "unknown_tool"
    LOW_CONFIDENCE = "low_confidence"
    MALFORMED = "malformed"
    RATE_LIMIT = "rate_limit"
    # argument attacks: the model picks its own arguments; the runtime executes the bound ones
    OTHER_RECORD = "other_record"
    UNDERSTATE = "understate"


HANDOFF_FAULTS = frozenset({Fault.TRUNCATE, Fault.STALE, Fault.TAMPER})
# Refused only at a WRITE/IRREVERSIBLE tool; at a READ tool the bound values simply run instead.
ARGUMENT_FAULTS = frozenset({Fault.OTHER_RECORD, Fault.UNDERSTATE})
ATTACK_FAULTS = frozenset({Fault.REWRITE_UPSTREAM, Fault.SWAP_RECORD, Fault.HOLLOW})


def corrupt_handoff(fault: Fault, proposed: ContextSnapshot, received: ContextSnapshot) -> ContextSnapshot:
    """What a faulty agent or transport does to a proposed snapshot (declared hash and size kept)."""
    if fault is Fault.TRUNCATE:
        cut = max(1, len(proposed.context_json) // 3)
        return proposed.model_copy(update={"context_json": proposed.context_json[:-cut]})
    if fault is Fault.TAMPER:
        context = load_context(proposed)
        for key, value in sorted(context.items()):
            if isinstance(value, str) and value and value[-1].isascii():
                context[key] = value[:-1] + ("x" if value[-1] != "x" else "y")
                return proposed.model_copy(update={"context_json": canonical_bytes(context).decode()})
        raise ValueError("no string value to tamper with")
    if fault is Fault.STALE:
        # Built on the context before the one received: the version and parent of an older checkpoint.
        return proposed.model_copy(update={"version": received.version, "parent_sha256": received.parent_sha256})
    raise ValueError(f"{fault} is not a handoff fault")


def _lowered(value: Any) -> Any:
    """An upstream value rewritten: a dict's first number set to 0 (a risk score lowered), else changed."""
    if isinstance(value, dict):
        for k in sorted(value):
            if isinstance(value[k], int | float) and not isinstance(value[k], bool):
                return {**value, k: 0}
        return {**value, "rewritten": True}
    return f"{value}-rewritten" if isinstance(value, str) else None


def _swapped(value: Any) -> Any:
    """Another record in place of the one the tool returned (ids of someone else)."""
    if isinstance(value, dict):
        ids = {k: f"{v}-other" for k, v in value.items() if isinstance(v, str) and k.endswith("id")}
        return {**value, **ids} if ids else {**value, "swapped": True}
    return {"swapped": value}


def attack_handoff(
    fault: Fault, proposal: HandoffProposed, *, received: ContextSnapshot, owned: Collection[str]
) -> HandoffProposed:
    """What a compromised agent does to its proposal, recomputing hash (and provenance) so both still hold."""
    before = load_context(received)
    context = load_context(proposal.snapshot)
    update: dict[str, Any] = {}
    if fault is Fault.REWRITE_UPSTREAM:
        key = next(k for k in sorted(before) if k not in owned)  # an upstream agent's value or a task input
        context[key] = _lowered(context[key])
    elif fault is Fault.SWAP_RECORD:
        key = next(k for k in sorted(context) if k in owned and k not in before)  # its own tool's result
        context[key] = _swapped(context[key])
        update["provenance"] = [
            p.model_copy(update={"result_sha256": context_sha256(context[key])}) if p.key == key else p
            for p in proposal.provenance
        ]
    elif fault is Fault.HOLLOW:
        context = {k: v for k, v in context.items() if k not in before}
        update["dropped_keys"] = sorted(before)
    else:
        raise ValueError(f"{fault} is not an attack on a handoff")
    update["snapshot"] = make_snapshot(context, version=proposal.snapshot.version, parent=received)
    return proposal.model_copy(update=update)


@dataclass
class FaultPlan:
    """workflow id -> (agent, fault). Faults fire on a step's first attempt only."""

    faults: dict[str, tuple[str, Fault]] = field(default_factory=dict)

    def fault_for(self, workflow_id: str, agent: str, attempt: int = 1) -> Fault | None:
        planned = self.faults.get(workflow_id)
        if planned is None or planned[0] != agent or attempt != 1:
            return None
        return planned[1]

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps({wf: [a, f.value] for wf, (a, f) in self.faults.items()}))

    @classmethod
    def load(cls, path: Path) -> FaultPlan:
        raw = json.loads(path.read_text())
        return cls({wf: (a, Fault(f)) for wf, (a, f) in raw.items()})

    @classmethod
    def spread(
        cls, workflows: Sequence[tuple[str, Sequence[str]]], faults: Sequence[Fault], *, per_fault: int, seed: int
    ) -> FaultPlan:
        """Give per_fault distinct workflows each fault, at a seeded choice of their agents."""
        rnd = random.Random(seed)
        pool = list(workflows)
        rnd.shuffle(pool)
        plan: dict[str, tuple[str, Fault]] = {}
        for fault in faults:
            for _ in range(per_fault):
                if not pool:
                    return cls(plan)
                wf, agents = pool.pop()
                plan[wf] = (rnd.choice(list(agents)), fault)
        return cls(plan)


def _attacked(fault: Fault | None, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments a misled model picks: the next record's id (another customer, often another tenant's),
    or every number a tenth of the truth (a refund under its approval threshold)."""
    out = dict(arguments)
    for name, value in arguments.items():
        if fault is Fault.OTHER_RECORD and isinstance(value, str):
            digits = len(value) - len(value.rstrip("0123456789"))
            if digits:
                out[name] = f"{value[:-digits]}{int(value[-digits:]) + 1:0{digits}d}"
        elif fault is Fault.UNDERSTATE and isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = round(value / 10, 2)
    return out


@dataclass
class FaultInjectingModel:
    """A model that misbehaves as the plan says: loops, names a tool that does not exist, answers with low
    confidence, returns malformed output, hits a rate limit, or picks arguments other than the context's."""

    inner: ModelClient
    plan: FaultPlan
    rate_limit_failures: int = 2
    _rate_limited: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def decide(self, request: ModelRequest) -> ModelReply:
        agent = request.agent
        fault = self.plan.fault_for(request.workflow_id, agent.name, request.attempt)
        if fault is Fault.RATE_LIMIT:
            key = f"{request.workflow_id}:{agent.name}"
            if self._rate_limited[key] < self.rate_limit_failures:
                self._rate_limited[key] += 1
                raise RateLimitedError("scripted backend: 429 Too Many Requests (injected)")
        if fault is Fault.MALFORMED:
            raise MalformedOutputError("model returned '{\"tool\": lookup_' which is not valid JSON (injected)")
        reply = await self.inner.decide(request)
        if fault is Fault.UNKNOWN_TOOL:
            return ModelReply(
                ToolChoice("delete_all_records", {}), 0.9, reply.prompt_tokens, 25, "use a tool I was not given"
            )
        if fault is Fault.LOOP and agent.tools:
            first = agent.tools[0]
            args = {k: lookup(request.context, v) for k, v in first.args.items()}
            return ModelReply(ToolChoice(first.name, args), 0.9, reply.prompt_tokens, 25, "try again, maybe it changed")
        if reply.tool is not None:
            return dataclasses.replace(reply, tool=ToolChoice(reply.tool.name, _attacked(fault, reply.tool.arguments)))
        if fault is Fault.LOW_CONFIDENCE:
            return dataclasses.replace(reply, confidence=0.2)
        return reply


ProposalFilter = Callable[[HandoffProposed, ContextSnapshot, int], HandoffProposed]


def handoff_faults(plan: FaultPlan, agent: AgentSpec) -> ProposalFilter:
    """The agent service's proposal filter that corrupts (HANDOFF_FAULTS) or attacks (ATTACK_FAULTS) a handoff."""
    owned = agent.owned_keys()

    def apply(proposal: HandoffProposed, received: ContextSnapshot, attempt: int) -> HandoffProposed:
        fault = plan.fault_for(proposal.envelope.workflow_id, agent.name, attempt)
        if fault in HANDOFF_FAULTS:
            assert fault is not None
            # Only the proposal's snapshot: the StepCompleted the agent publishes carries the one it made.
            proposal = proposal.model_copy(update={"snapshot": corrupt_handoff(fault, proposal.snapshot, received)})
        if fault in ATTACK_FAULTS:
            assert fault is not None
            proposal = attack_handoff(fault, proposal, received=received, owned=owned)
        return proposal

    return apply
