"""What a pending approval is: one exact action (digested), who must decide it, what they decided.

No broker imports. The approval service (`services/approvals/`) receives `ApprovalRequest`s from the policy
guard's ApprovalRequested events, keeps them as `Approval` records in an `ApprovalStore` (SQLite embedded,
MongoDB in production) and decides them through `baton.approvals.desk.ApprovalDesk`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

from baton.context import context_sha256

T = TypeVar("T")


class ApprovalState(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


Fallback = Literal["reject", "escalate"]
VoteKind = Literal["approve", "reject"]


@dataclass(frozen=True)
class ActionBinding:
    """The exact action a human approves: approving it permits this and nothing else."""

    workflow_id: str
    tenant_id: str
    agent: str
    tool: str
    arguments_json: str
    arguments_sha256: str
    idempotency_key: str
    context_sha256: str  # the step's verified input context the action was decided on
    policy_version: str
    step_version: int

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON (RFC 8785) of every field: any change gives another digest."""
        return context_sha256(asdict(self))


@dataclass(frozen=True)
class ApprovalRequest:
    """An action waiting for humans, as the guard asked for it (ApprovalRequested)."""

    approval_id: str
    action: ActionBinding
    workflow_type: str
    queue: str
    required_approvals: int  # M of N: distinct reviewers needed
    expires_at: float  # epoch seconds: the SLA
    fallback: Fallback  # on expiry: reject, or escalate once to escalate_to
    escalate_to: str | None
    reason: str  # why the policy asks a human
    rationale: str  # why the agent wants it
    confidence: float | None
    decision_type: str | None
    tier: str
    preview: dict[str, Any] | None  # the tool's dry run: what will change (before/after), when it offers one
    lineage: tuple[str, ...]  # agents that ran before, in order
    requested_at: float
    bound_from: dict[str, str] = field(default_factory=dict)  # argument -> the context key it was bound to
    submitted_by: str = ""  # who submitted the task (TaskRequested.requested_by)
    traceparent: str = ""  # the trace the request came in (its decision is published in it)

    @property
    def requested_by(self) -> str:
        """The requesting agent (never one of its reviewers)."""
        return self.action.agent

    @property
    def requesting_side(self) -> frozenset[str]:
        """Everyone on the requesting side: the agent, and whoever submitted the task."""
        return frozenset(n for n in (self.action.agent, self.submitted_by) if n)


@dataclass(frozen=True)
class Vote:
    reviewer: str
    kind: VoteKind
    reason: str
    at: float


@dataclass(frozen=True)
class Approval:
    """A stored approval: the request, where it stands, every vote; `version` increases with each change."""

    request: ApprovalRequest
    state: ApprovalState
    queue: str  # current queue (the request's, or escalate_to after an escalation)
    expires_at: float  # current SLA deadline
    votes: tuple[Vote, ...] = ()
    decided_at: float | None = None
    decided_by: tuple[str, ...] = ()
    comment: str | None = None
    escalations: int = 0
    published: bool = False  # its ApprovalDecided was acknowledged by the bus
    version: int = 1

    @property
    def approval_id(self) -> str:
        return self.request.approval_id

    @property
    def digest(self) -> str:
        return self.request.action.digest()


# A pure change of one approval: (current) -> (changed, or None for no write; what the caller gets back).
ApprovalChange = Callable[[Approval], tuple[Approval | None, T]]


class ApprovalStore(Protocol):
    """Durable approvals shared by every approval-service replica; each change atomic per approval."""

    async def setup(self) -> None: ...

    async def add(self, approval: Approval) -> bool:
        """Store a new approval; False (and nothing written) when one with its id exists: requests are
        redelivered, the first one stands."""
        ...

    async def get(self, approval_id: str) -> Approval | None: ...

    async def update(self, approval_id: str, change: ApprovalChange[T]) -> T:
        """Apply change atomically to the latest version (retried on a concurrent write); KeyError if unknown."""
        ...

    async def pending(self, *, queue: str | None = None, limit: int = 500) -> list[Approval]:
        """Pending approvals (of one queue), oldest first."""
        ...

    async def due(self, now: float, *, limit: int = 500) -> list[Approval]:
        """Pending approvals whose deadline passed."""
        ...

    async def unpublished(self, *, limit: int = 500) -> list[Approval]:
        """Decided approvals whose ApprovalDecided was not acknowledged yet (the outbox)."""
        ...

    async def decided_since(self, since: float, *, limit: int = 10_000) -> list[Approval]:
        """Approvals decided at or after since (metrics)."""
        ...

    async def close(self) -> None: ...


# Opens a store (a test's second replica, or the same one after a restart).
OpenStore = Callable[[], Awaitable[ApprovalStore]]


class ApprovalError(Exception):
    """A decision that cannot be taken: `code` is machine-readable, `status` the HTTP status the API answers."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Reviewer:
    """An authenticated human: which queues they see ("*": all) and their roles ("approver" decides, "viewer"
    only reads)."""

    name: str
    queues: frozenset[str]
    roles: frozenset[str]

    def sees(self, queue: str) -> bool:
        return "*" in self.queues or queue in self.queues

    @property
    def approves(self) -> bool:
        return "approver" in self.roles


def to_doc(approval: Approval) -> dict[str, Any]:
    """An approval as a JSON-able document (the one codec both stores use)."""
    doc = asdict(approval)
    doc["request"]["lineage"] = list(approval.request.lineage)
    doc["votes"] = [asdict(v) for v in approval.votes]
    doc["decided_by"] = list(approval.decided_by)
    doc["state"] = approval.state.value
    return doc


def from_doc(doc: dict[str, Any]) -> Approval:
    """The approval a document holds (to_doc's inverse)."""
    raw = dict(doc["request"])
    raw["action"] = ActionBinding(**raw["action"])
    raw["lineage"] = tuple(raw.get("lineage", ()))
    return Approval(
        request=ApprovalRequest(**raw),
        state=ApprovalState(doc["state"]),
        queue=doc["queue"],
        expires_at=float(doc["expires_at"]),
        votes=tuple(Vote(**v) for v in doc.get("votes", ())),
        decided_at=doc.get("decided_at"),
        decided_by=tuple(doc.get("decided_by", ())),
        comment=doc.get("comment"),
        escalations=int(doc.get("escalations", 0)),
        published=bool(doc.get("published", False)),
        version=int(doc.get("version", 1)),
    )
