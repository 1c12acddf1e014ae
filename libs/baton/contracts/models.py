"""Typed models mirroring the Avro schemas under schemas/ (one model per record).

Each event model mirrors the newest version of its schema; fields added in later
versions carry defaults, so older events decode into the newest model. The schemas
are the source of truth: baton.contracts.mirror checks every model against its
schema field by field (type, optionality, default, order), and `baton schemas check`
fails on any difference.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class FailureClass(StrEnum):
    TRANSIENT = "TRANSIENT"
    CONTEXT = "CONTEXT"
    LOGIC = "LOGIC"
    SYSTEMIC = "SYSTEMIC"


class PermissionTier(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    IRREVERSIBLE = "IRREVERSIBLE"


class ApprovalFallback(StrEnum):
    DENY = "DENY"
    ESCALATE = "ESCALATE"


class ApprovalDecision(StrEnum):
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class ControlAction(StrEnum):
    HALT = "HALT"
    RESUME = "RESUME"


class ControlScope(StrEnum):
    WORKFLOW = "WORKFLOW"
    TENANT = "TENANT"
    ALL = "ALL"


class HandoffRejectionCode(StrEnum):
    HASH_MISMATCH = "HASH_MISMATCH"
    TRUNCATED = "TRUNCATED"
    STALE = "STALE"
    INCOMPLETE = "INCOMPLETE"
    CONTEXT_LOST = "CONTEXT_LOST"
    OVERSIZED = "OVERSIZED"
    MALFORMED = "MALFORMED"
    TENANT_MISMATCH = "TENANT_MISMATCH"
    NOT_RUNNING_AGENT = "NOT_RUNNING_AGENT"
    NOT_OWNER = "NOT_OWNER"
    DROP_NOT_ALLOWED = "DROP_NOT_ALLOWED"
    SUMMARY_INVALID = "SUMMARY_INVALID"
    HOLLOW_CONTEXT = "HOLLOW_CONTEXT"
    TOOL_PROVENANCE = "TOOL_PROVENANCE"


class Record(BaseModel):
    """Base of every model that mirrors an Avro record."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    avro_name: ClassVar[str]


def _now() -> datetime:
    return datetime.now(UTC)


def stable_event_id(*parts: object) -> str:
    """A deterministic event id: the same effect re-emitted carries the same id, so consumers dedupe it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "baton:" + ":".join(str(p) for p in parts)))


class Envelope(Record):
    avro_name: ClassVar[str] = "io.baton.common.v1.Envelope"
    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    event_type: str = ""
    schema_version: int = 0
    workflow_id: str
    tenant_id: str
    step_seq: int = 0
    causation_id: str | None = None
    correlation_id: str = ""
    producer: str
    occurred_at: datetime = Field(default_factory=_now)


class ContextSnapshot(Record):
    avro_name: ClassVar[str] = "io.baton.common.v1.ContextSnapshot"
    context_json: str
    sha256: str
    size_bytes: int
    version: int
    parent_sha256: str | None = None


class ContextDiff(Record):
    avro_name: ClassVar[str] = "io.baton.common.v1.ContextDiff"
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)


class ToolProvenance(Record):
    avro_name: ClassVar[str] = "io.baton.common.v1.ToolProvenance"
    key: str
    tool: str
    call_id: str
    result_sha256: str


class Event(Record):
    """Base of every event: an envelope plus the event's own fields."""

    event_type: ClassVar[str]
    envelope: Envelope


class TaskRequested(Event):
    avro_name: ClassVar[str] = "io.baton.events.v2.TaskRequested"
    event_type: ClassVar[str] = "TaskRequested"
    workflow_type: str
    input_json: str
    requested_by: str
    deadline: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class StepRequested(Event):
    avro_name: ClassVar[str] = "io.baton.events.v3.StepRequested"
    event_type: ClassVar[str] = "StepRequested"
    agent: str
    attempt: int
    snapshot: ContextSnapshot
    diff: ContextDiff | None = None
    ticket: str = ""
    lineage: list[str] = Field(default_factory=list)
    approval_token: str = ""


class StepCompleted(Event):
    avro_name: ClassVar[str] = "io.baton.events.v4.StepCompleted"
    event_type: ClassVar[str] = "StepCompleted"
    agent: str
    succeeded: bool
    snapshot: ContextSnapshot | None = None
    failure_class: FailureClass | None = None
    error: str | None = None
    tokens_used: int = 0
    tool_calls: int = 0
    error_code: str | None = None
    confidence: float | None = None
    attempt: int = 1
    approval_id: str | None = None
    tools: list[str] = Field(default_factory=list)
    duration_ms: int = 0


class AgentDecision(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.AgentDecision"
    event_type: ClassVar[str] = "AgentDecision"
    agent: str
    decision_type: str
    input_context_sha256: str
    tools_considered: list[str] = Field(default_factory=list)
    tool_selected: str | None = None
    confidence: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    output_context_sha256: str | None = None
    rationale: str = ""


class HandoffProposed(Event):
    avro_name: ClassVar[str] = "io.baton.events.v2.HandoffProposed"
    event_type: ClassVar[str] = "HandoffProposed"
    from_agent: str
    to_agent: str
    snapshot: ContextSnapshot
    dropped_keys: list[str] = Field(default_factory=list)
    summarised_keys: list[str] = Field(default_factory=list)
    provenance: list[ToolProvenance] = Field(default_factory=list)
    summary_sources: dict[str, str] = Field(default_factory=dict)


class HandoffAccepted(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.HandoffAccepted"
    event_type: ClassVar[str] = "HandoffAccepted"
    from_agent: str
    to_agent: str
    snapshot: ContextSnapshot
    diff: ContextDiff


class HandoffRejected(Event):
    avro_name: ClassVar[str] = "io.baton.events.v2.HandoffRejected"
    event_type: ClassVar[str] = "HandoffRejected"
    from_agent: str
    to_agent: str
    reason_code: HandoffRejectionCode
    reason: str
    failure_class: FailureClass
    proposed_sha256: str
    expected_parent_sha256: str | None = None


class ToolCallRequested(Event):
    avro_name: ClassVar[str] = "io.baton.events.v3.ToolCallRequested"
    event_type: ClassVar[str] = "ToolCallRequested"
    call_id: str
    agent: str
    tool: str
    arguments_json: str
    idempotency_key: str
    step_version: int = 0
    arguments_sha256: str = ""
    step_ticket: str = ""
    rationale: str = ""
    confidence: float | None = None
    decision_type: str | None = None
    preview_json: str | None = None
    lineage: list[str] = Field(default_factory=list)
    bound_from_json: str = "{}"
    approval_token: str = ""


class ToolCallAuthorized(Event):
    avro_name: ClassVar[str] = "io.baton.events.v2.ToolCallAuthorized"
    event_type: ClassVar[str] = "ToolCallAuthorized"
    call_id: str
    agent: str
    tool: str
    tier: PermissionTier
    idempotency_key: str
    approval_id: str | None = None
    grant: str = ""
    policy_version: str = ""
    policies: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0


class ToolCallDenied(Event):
    avro_name: ClassVar[str] = "io.baton.events.v2.ToolCallDenied"
    event_type: ClassVar[str] = "ToolCallDenied"
    call_id: str
    agent: str
    tool: str
    reason_code: str
    reason: str
    policy_version: str = ""
    policies: list[str] = Field(default_factory=list)
    failure_class: FailureClass | None = None
    approval_id: str | None = None


class GuardFlagKind(StrEnum):
    PII_REDACTED = "PII_REDACTED"
    INJECTION_FLAGGED = "INJECTION_FLAGGED"
    SPEND_ALERT = "SPEND_ALERT"
    RATE_LIMITED = "RATE_LIMITED"


class GuardFlagItem(Record):
    avro_name: ClassVar[str] = "io.baton.common.v1.GuardFlagItem"
    path: str
    label: str
    count: int


class GuardFlagged(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.GuardFlagged"
    event_type: ClassVar[str] = "GuardFlagged"
    kind: GuardFlagKind
    source: str
    tool: str | None = None
    call_id: str | None = None
    items: list[GuardFlagItem] = Field(default_factory=list)
    figures: dict[str, float] = Field(default_factory=dict)
    detail: str


class AgentAnomaly(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.AgentAnomaly"
    event_type: ClassVar[str] = "AgentAnomaly"
    agent: str
    kind: str
    feature: str
    observed: float
    baseline: float
    score: float
    threshold: float
    action: str
    detail: str


class ApprovalRequested(Event):
    avro_name: ClassVar[str] = "io.baton.events.v2.ApprovalRequested"
    event_type: ClassVar[str] = "ApprovalRequested"
    approval_id: str
    call_id: str
    agent: str
    tool: str
    arguments_json: str
    reason: str
    required_approvals: int = 1
    expires_at: datetime
    fallback: ApprovalFallback
    workflow_type: str = ""
    queue: str = ""
    escalate_to: str | None = None
    action_digest: str = ""
    arguments_sha256: str = ""
    context_sha256: str = ""
    policy_version: str = ""
    step_version: int = 0
    tier: str = ""
    rationale: str = ""
    confidence: float | None = None
    decision_type: str | None = None
    preview_json: str | None = None
    lineage: list[str] = Field(default_factory=list)
    bound_from_json: str = "{}"
    requested_at: datetime | None = None
    requested_by: str = ""


class ApprovalDecided(Event):
    avro_name: ClassVar[str] = "io.baton.events.v2.ApprovalDecided"
    event_type: ClassVar[str] = "ApprovalDecided"
    approval_id: str
    decision: ApprovalDecision
    decided_by: list[str] = Field(default_factory=list)
    comment: str | None = None
    action_digest: str = ""
    call_id: str = ""
    queue: str = ""
    approval_token: str = ""


class WorkflowCheckpointed(Event):
    avro_name: ClassVar[str] = "io.baton.events.v2.WorkflowCheckpointed"
    event_type: ClassVar[str] = "WorkflowCheckpointed"
    workflow_type: str
    state: str
    next_agent: str | None = None
    completed_steps: list[str] = Field(default_factory=list)
    snapshot: ContextSnapshot
    budgets_json: str = "{}"
    supervisor_state_json: str = "{}"


class WorkflowCompleted(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.WorkflowCompleted"
    event_type: ClassVar[str] = "WorkflowCompleted"
    workflow_type: str
    snapshot: ContextSnapshot
    steps: int


class WorkflowHalted(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.WorkflowHalted"
    event_type: ClassVar[str] = "WorkflowHalted"
    workflow_type: str
    reason_code: str
    reason: str
    failure_class: FailureClass | None = None


class WorkflowEscalated(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.WorkflowEscalated"
    event_type: ClassVar[str] = "WorkflowEscalated"
    workflow_type: str
    reason_code: str
    reason: str
    escalated_to: str


class ControlCommand(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.ControlCommand"
    event_type: ClassVar[str] = "ControlCommand"
    command: ControlAction
    scope: ControlScope
    target: str | None = None
    reason: str
    issued_by: str


class ControlConfirmed(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.ControlConfirmed"
    event_type: ClassVar[str] = "ControlConfirmed"
    command_event_id: str
    command: ControlAction
    scope: ControlScope
    target: str | None = None
    role: str
    halted: int
    detail: str = ""


class DeadLettered(Event):
    avro_name: ClassVar[str] = "io.baton.events.v1.DeadLettered"
    event_type: ClassVar[str] = "DeadLettered"
    source_topic: str
    source_partition: int
    source_offset: int
    source_key: bytes | None = None
    consumer_group: str
    reason_code: str
    reason: str
    payload: bytes


EVENT_MODELS: tuple[type[Event], ...] = (
    TaskRequested,
    StepRequested,
    StepCompleted,
    AgentDecision,
    HandoffProposed,
    HandoffAccepted,
    HandoffRejected,
    ToolCallRequested,
    ToolCallAuthorized,
    ToolCallDenied,
    GuardFlagged,
    AgentAnomaly,
    ApprovalRequested,
    ApprovalDecided,
    WorkflowCheckpointed,
    WorkflowCompleted,
    WorkflowHalted,
    WorkflowEscalated,
    ControlCommand,
    ControlConfirmed,
    DeadLettered,
)

RECORD_MODELS: tuple[type[Record], ...] = (
    Envelope,
    ContextSnapshot,
    ContextDiff,
    ToolProvenance,
    GuardFlagItem,
    *EVENT_MODELS,
)
