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
# Signed audit anchors as canonical JSON, not Avro events (see baton.audit.anchors): compacted, not audited.
AUDIT_ANCHORS = "baton.audit.anchors"

GROUP_SUPERVISOR = "baton.supervisor"
GROUP_HANDOFF_VALIDATOR = "baton.handoff-validator"
GROUP_AUDITOR = "baton.auditor"


def agent_steps(agent_kind: str) -> str:
    """Topic an agent kind consumes its step requests (and accepted handoffs) from."""
    return f"baton.agents.{agent_kind}.steps"


def agent_group(agent_kind: str) -> str:
    """Consumer group of one agent kind's replicas."""
    return f"baton.agent.{agent_kind}"


# Which event types belong on which topic: a consumer dead-letters anything else (see messaging.py).
CARRIES: dict[str, frozenset[str]] = {
    TASKS: frozenset({"TaskRequested"}),
    OUTCOMES: frozenset({"WorkflowCompleted", "WorkflowHalted", "WorkflowEscalated"}),
    HANDOFF_PROPOSALS: frozenset({"HandoffProposed"}),
    HANDOFF_VERDICTS: frozenset({"HandoffAccepted", "HandoffRejected"}),
    STEP_RESULTS: frozenset({"StepCompleted"}),
    DECISIONS: frozenset({"AgentDecision"}),
    TOOL_REQUESTS: frozenset({"ToolCallRequested"}),
    TOOL_VERDICTS: frozenset({"ToolCallAuthorized", "ToolCallDenied"}),
    APPROVAL_REQUESTS: frozenset({"ApprovalRequested"}),
    APPROVAL_DECISIONS: frozenset({"ApprovalDecided"}),
    CHECKPOINTS: frozenset({"WorkflowCheckpointed"}),
    CONTROL: frozenset({"ControlCommand"}),
    DEAD_LETTER: frozenset({"DeadLettered"}),
}
_AGENT_STEPS = frozenset({"StepRequested"})


def carries(topic: str) -> frozenset[str]:
    """Event types allowed on a topic (empty for a topic Baton does not know)."""
    if topic.startswith("baton.agents.") and topic.endswith(".steps"):
        return _AGENT_STEPS
    return CARRIES.get(topic, frozenset())


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
