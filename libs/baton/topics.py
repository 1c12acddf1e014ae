"""Topic names and consumer groups: the only place they are spelled."""

from __future__ import annotations

TASKS = "baton.tasks"
OUTCOMES = "baton.outcomes"
HANDOFF_PROPOSALS = "baton.handoffs.proposed"
HANDOFF_VERDICTS = "baton.handoffs.verdicts"
STEP_RESULTS = "baton.steps.results"
DECISIONS = "baton.agents.decisions"
TOOL_REQUESTS = "baton.tools.requests"
TOOL_VERDICTS = "baton.tools.verdicts"
APPROVAL_REQUESTS = "baton.approvals.requested"
APPROVAL_DECISIONS = "baton.approvals.decided"
CHECKPOINTS = "baton.workflows.checkpoints"
CONTROL = "baton.control"
DEAD_LETTER = "baton.dead-letter"

GROUP_SUPERVISOR = "baton.supervisor"
GROUP_HANDOFF_VALIDATOR = "baton.handoff-validator"
GROUP_POLICY_GUARD = "baton.policy-guard"
GROUP_APPROVALS = "baton.approvals"
GROUP_AUDITOR = "baton.auditor"


def agent_steps(agent_kind: str) -> str:
    """Topic an agent kind consumes its step requests (and accepted handoffs) from."""
    return f"baton.agents.{agent_kind}.steps"


def agent_group(agent_kind: str) -> str:
    """Consumer group of one agent kind's replicas."""
    return f"baton.agent.{agent_kind}"


CORE_TOPICS: tuple[str, ...] = (
    TASKS,
    OUTCOMES,
    HANDOFF_PROPOSALS,
    HANDOFF_VERDICTS,
    STEP_RESULTS,
    DECISIONS,
    TOOL_REQUESTS,
    TOOL_VERDICTS,
    APPROVAL_REQUESTS,
    APPROVAL_DECISIONS,
    CHECKPOINTS,
    CONTROL,
    DEAD_LETTER,
)
