"""Topic names and consumer groups: the only place they are spelled."""

from __future__ import annotations

from baton import identity

TASKS = "baton.tasks"
OUTCOMES = "baton.outcomes"
HANDOFF_PROPOSALS = "baton.handoffs.proposed"
HANDOFF_VERDICTS = "baton.handoffs.verdicts"
STEP_RESULTS = "baton.steps.results"
DECISIONS = "baton.agents.decisions"
TOOL_REQUESTS = "baton.tools.requests"
TOOL_VERDICTS = "baton.tools.verdicts"
# What the guard's rules found: redactions, injection flags, spend alerts (never a redacted value).
GUARD_FLAGS = "baton.guard.flags"
# Agents behaving outside their learned baselines (baton.anomaly), as the supervisor saw them.
ANOMALIES = "baton.agents.anomalies"
APPROVAL_REQUESTS = "baton.approvals.requested"
APPROVAL_DECISIONS = "baton.approvals.decided"
CHECKPOINTS = "baton.workflows.checkpoints"
CONTROL = "baton.control"
CONTROL_CONFIRMATIONS = "baton.control.confirmations"
DEAD_LETTER = "baton.dead-letter"
# Signed audit anchors as canonical JSON, not Avro events (see baton.audit.anchors): compacted, not audited.
AUDIT_ANCHORS = "baton.audit.anchors"

GROUP_SUPERVISOR = "baton.supervisor"
GROUP_HANDOFF_VALIDATOR = "baton.handoff-validator"
GROUP_AUDITOR = "baton.auditor"
GROUP_POLICY_GUARD = "baton.policy-guard"
GROUP_APPROVALS = "baton.approvals"


def agent_steps(agent_kind: str) -> str:
    """Topic an agent kind consumes its step requests (and accepted handoffs) from."""
    return f"baton.agents.{agent_kind}.steps"


def agent_group(agent_kind: str) -> str:
    """Consumer group of one agent kind's replicas."""
    return f"baton.agent.{agent_kind}"


# Who may produce what, where: topic -> event type -> roles (see baton.identity). The one matrix: consumers
# dead-letter an event of another type (WRONG_TOPIC) or from another role (NOT_AUTHORIZED), the Kafka ACLs
# of deploy/ follow it, and docs/security.md shows it (`baton keys matrix` prints it).
ANY_AGENT = "agent:*"
_EVERY_CONSUMER = frozenset(
    {
        identity.SUPERVISOR,
        identity.HANDOFF_VALIDATOR,
        identity.AUDITOR,
        identity.CLIENT,
        identity.POLICY_GUARD,
        identity.APPROVALS,
        ANY_AGENT,
    }
)
PRODUCERS: dict[str, dict[str, frozenset[str]]] = {
    TASKS: {"TaskRequested": frozenset({identity.CLIENT})},
    OUTCOMES: {
        t: frozenset({identity.SUPERVISOR}) for t in ("WorkflowCompleted", "WorkflowHalted", "WorkflowEscalated")
    },
    HANDOFF_PROPOSALS: {"HandoffProposed": frozenset({ANY_AGENT})},
    HANDOFF_VERDICTS: {t: frozenset({identity.HANDOFF_VALIDATOR}) for t in ("HandoffAccepted", "HandoffRejected")},
    STEP_RESULTS: {"StepCompleted": frozenset({ANY_AGENT})},
    DECISIONS: {"AgentDecision": frozenset({ANY_AGENT})},
    TOOL_REQUESTS: {"ToolCallRequested": frozenset({ANY_AGENT})},
    TOOL_VERDICTS: {t: frozenset({identity.POLICY_GUARD}) for t in ("ToolCallAuthorized", "ToolCallDenied")},
    GUARD_FLAGS: {"GuardFlagged": frozenset({identity.POLICY_GUARD, ANY_AGENT})},
    ANOMALIES: {"AgentAnomaly": frozenset({identity.SUPERVISOR})},
    APPROVAL_REQUESTS: {"ApprovalRequested": frozenset({identity.POLICY_GUARD})},
    APPROVAL_DECISIONS: {"ApprovalDecided": frozenset({identity.APPROVALS})},
    CHECKPOINTS: {"WorkflowCheckpointed": frozenset({identity.SUPERVISOR})},
    CONTROL: {"ControlCommand": frozenset({identity.OPERATOR})},
    # Every process that obeys the kill switch says so (see baton.control); the operator's CLI reads them.
    CONTROL_CONFIRMATIONS: {"ControlConfirmed": _EVERY_CONSUMER - {identity.CLIENT}},
    DEAD_LETTER: {"DeadLettered": _EVERY_CONSUMER},
}
_AGENT_STEPS_PRODUCERS: dict[str, frozenset[str]] = {"StepRequested": frozenset({identity.SUPERVISOR})}
AGENT_STEPS_PATTERN = agent_steps("<kind>")

# An agent's event names the agent that acts in this field; an agent may only speak for its own kind.
ACTING_AGENT_FIELD: dict[str, str] = {
    "StepCompleted": "agent",
    "AgentDecision": "agent",
    "HandoffProposed": "from_agent",
    "ToolCallRequested": "agent",
}

CARRIES: dict[str, frozenset[str]] = {topic: frozenset(by_type) for topic, by_type in PRODUCERS.items()}


def _is_agent_steps(topic: str) -> bool:
    return topic.startswith("baton.agents.") and topic.endswith(".steps")


def carries(topic: str) -> frozenset[str]:
    """Event types allowed on a topic (empty for a topic Baton does not know)."""
    if _is_agent_steps(topic):
        return frozenset(_AGENT_STEPS_PRODUCERS)
    return CARRIES.get(topic, frozenset())


def producers(topic: str, event_type: str) -> frozenset[str]:
    """Roles that may produce this event type on this topic (empty: nobody, or a topic Baton does not know)."""
    by_type = _AGENT_STEPS_PRODUCERS if _is_agent_steps(topic) else PRODUCERS.get(topic, {})
    return by_type.get(event_type, frozenset())


def may_produce(role: str, topic: str, event_type: str) -> bool:
    """Whether a role may produce this event type on this topic, by the matrix."""
    allowed = producers(topic, event_type)
    return role in allowed or (ANY_AGENT in allowed and identity.agent_kind(role) is not None)


CORE_TOPICS: tuple[str, ...] = (
    TASKS,
    OUTCOMES,
    HANDOFF_PROPOSALS,
    HANDOFF_VERDICTS,
    STEP_RESULTS,
    DECISIONS,
    TOOL_REQUESTS,
    TOOL_VERDICTS,
    GUARD_FLAGS,
    ANOMALIES,
    APPROVAL_REQUESTS,
    APPROVAL_DECISIONS,
    CHECKPOINTS,
    CONTROL,
    CONTROL_CONFIRMATIONS,
    DEAD_LETTER,
)


def producer_matrix_markdown() -> str:
    """The producer matrix as a Markdown table (docs/security.md holds it; a test keeps the two equal)."""
    rows = ["| topic | event type | who may produce it |", "|---|---|---|"]
    matrix = {**PRODUCERS, AGENT_STEPS_PATTERN: _AGENT_STEPS_PRODUCERS}
    for topic in sorted(matrix):
        for event_type, roles in sorted(matrix[topic].items()):
            rows.append(f"| `{topic}` | {event_type} | {', '.join(f'`{r}`' for r in sorted(roles))} |")
    return "\n".join(rows)
