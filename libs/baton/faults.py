"""Fault plans: which workflow gets which injected fault at which agent (demo, tests, chaos runs)."""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from baton.context import canonical_bytes, context_sha256, load_context, make_snapshot
from baton.contracts.models import ContextSnapshot, HandoffProposed


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
