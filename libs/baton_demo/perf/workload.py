"""The events the bench measures: handoffs with 2 KB contexts that the validator accepts."""

from __future__ import annotations

from dataclasses import dataclass

from baton.context import context_sha256, make_snapshot
from baton.contracts.models import Envelope, HandoffProposed, ToolProvenance, WorkflowCheckpointed
from baton.handoff import tool_call_prefix
from baton.workflows import load_workflows

WORKFLOW = "customer_onboarding"
CONTEXT_BYTES = 2_000


@dataclass(frozen=True)
class Handoff:
    """A running workflow's checkpoint and the first agent's proposal to hand off from it."""

    checkpoint: WorkflowCheckpointed
    proposal: HandoffProposed


def handoff(i: int, *, tenant: str = "bench", prefix: str = "bench") -> Handoff:
    """Workflow i's first handoff: the identity agent adds its two tool results to a ~2 KB context."""
    spec = load_workflows()[WORKFLOW]
    first, second = spec.agents[0], spec.agents[1]
    wf = f"{prefix}-{i:07d}"
    before = {"customer_id": f"cust-{i:07d}", "notes": "n" * CONTEXT_BYTES}
    results: dict[str, object] = {
        "customer": {"id": f"cust-{i:07d}", "name": f"Customer {i}", "country": "NL"},
        "identity": {"verified": True, "method": "document", "score": 97},
    }
    parent = make_snapshot(before, version=1)
    after = make_snapshot({**before, **results}, version=2, parent=parent)
    provenance = []
    for key, value in results.items():
        tool = first.tool_for_key(key)
        assert tool is not None, f"{first.name} stores no tool result under {key}"
        provenance.append(
            ToolProvenance(
                key=key,
                tool=tool.name,
                call_id=tool_call_prefix(wf, first.name, tool.name) + "bench",
                result_sha256=context_sha256(value),
            )
        )
    env = Envelope(workflow_id=wf, tenant_id=tenant, producer="bench")
    return Handoff(
        checkpoint=WorkflowCheckpointed(
            envelope=env, workflow_type=spec.name, state="running", next_agent=first.name, snapshot=parent
        ),
        proposal=HandoffProposed(
            envelope=env.model_copy(update={"event_id": f"{wf}-proposal"}),
            from_agent=first.name,
            to_agent=second.name,
            snapshot=after,
            provenance=provenance,
        ),
    )
