"""Tool grants: the guard's signed, single-use permission for one exact call, checked where the tool runs.

A grant binds the workflow, the agent, the step (context version), the tool, the hash of the arguments, the
idempotency key and an expiry, and is signed with the guard's Ed25519 identity. The tool's side (the agent's
executor) runs a call only with a grant that verifies against the keyring as the guard's, matches the call
exactly, has not expired, and was never used before (the ledger consumes it). A rogue agent that skips the
guard has no grant; one that replays an old grant finds it used; one that changes the arguments after the
grant finds the hash does not match.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from baton import identity
from baton.context import canonical_bytes, context_sha256
from baton.contracts.models import FailureClass
from baton.identity import AuthenticationError, Identity, Keyring
from baton.tools.base import ToolError

_DOMAIN = b"baton.tool-grant.v1\x00"  # a grant's signature can never pass for an event's, nor the reverse


@dataclass(frozen=True)
class ToolGrant:
    """What the guard permits: one call, exactly."""

    grant_id: str
    workflow_id: str
    tenant_id: str
    agent: str
    step_version: int
    tool: str
    arguments_sha256: str
    idempotency_key: str
    policy_version: str
    expires_at: float

    def message(self) -> bytes:
        return _DOMAIN + canonical_bytes(asdict(self))


@dataclass(frozen=True)
class SignedGrant:
    """A grant with the guard's signature and key id, as it travels (e.g. in ToolCallAuthorized)."""

    grant: ToolGrant
    key_id: str
    signature: bytes

    def to_json(self) -> str:
        return json.dumps(
            {"grant": asdict(self.grant), "key_id": self.key_id, "signature": base64.b64encode(self.signature).decode()}
        )

    @classmethod
    def from_json(cls, text: str) -> SignedGrant:
        raw = json.loads(text)
        return cls(ToolGrant(**raw["grant"]), raw["key_id"], base64.b64decode(raw["signature"]))


def issue_grant(guard: Identity, *, ttl_s: float, now: float, **binding: Any) -> SignedGrant:
    """Sign a grant for one call (binding: workflow_id, tenant_id, agent, step_version, tool, arguments_sha256,
    idempotency_key, policy_version)."""
    grant = ToolGrant(grant_id=uuid.uuid4().hex, expires_at=now + ttl_s, **binding)
    return SignedGrant(grant, guard.key_id, guard.sign(grant.message()))


class GrantRefusedError(ToolError):
    """The call has no valid grant: nothing runs (codes GRANT_MISSING, GRANT_FORGED, GRANT_EXPIRED,
    GRANT_MISMATCH, GRANT_REUSED)."""


def check_grant(signed: SignedGrant | None, keyring: Keyring, *, expected: Mapping[str, Any], now: float) -> ToolGrant:
    """The grant, if it is the guard's, unexpired and for exactly this call; GrantRefusedError otherwise.
    (Single use is the caller's to enforce, atomically with running the call: `Ledger.consume_grant`.)"""
    tool = expected.get("tool", "?")
    if signed is None:
        raise GrantRefusedError(
            "GRANT_MISSING", f"{tool} runs only with the policy guard's authorization, and this call has none"
        )
    try:
        role = keyring.verify(signed.key_id.encode(), signed.signature, signed.grant.message())
    except AuthenticationError as exc:
        raise GrantRefusedError("GRANT_FORGED", f"the authorization for {tool} does not verify: {exc}") from exc
    if role != identity.POLICY_GUARD:
        raise GrantRefusedError(
            "GRANT_FORGED", f"the authorization for {tool} is signed by {role}, not by the policy guard"
        )
    grant = asdict(signed.grant)
    differing = sorted(k for k, v in expected.items() if grant.get(k) != v)
    if differing:
        raise GrantRefusedError(
            "GRANT_MISMATCH",
            f"the authorization was for another call ({', '.join(differing)} differ): a call runs only as authorized",
        )
    if now > signed.grant.expires_at:
        raise GrantRefusedError(
            "GRANT_EXPIRED",
            f"the authorization for {tool} expired {now - signed.grant.expires_at:.0f}s ago: ask again",
            FailureClass.TRANSIENT,
        )
    return signed.grant


class GrantVerifier:
    """The check a tool runs on its own side: the call's grant is the guard's, for exactly this call (tool, arguments,
    idempotency key, workflow), unexpired, and used once (`consume(grant_id, key=...)` records it durably and
    answers False when it was used before, e.g. `baton.ledger.Ledger.consume_grant`)."""

    def __init__(self, keyring: Keyring, consume: Callable[..., bool]) -> None:
        self._keyring = keyring
        self._consume = consume

    def verify(
        self,
        grant_json: str | None,
        *,
        tool: str,
        arguments: Mapping[str, Any],
        idempotency_key: str,
        workflow_id: str,
        tenant_id: str,
        agent: str,
        now: float,
    ) -> ToolGrant:
        """The grant, used up; GrantRefusedError (nothing may run) otherwise."""
        try:
            signed = SignedGrant.from_json(grant_json) if grant_json else None
        except (ValueError, KeyError, TypeError) as exc:
            raise GrantRefusedError("GRANT_FORGED", f"the authorization for {tool} cannot be read: {exc}") from exc
        expected = {
            "tool": tool,
            "arguments_sha256": context_sha256(dict(arguments)),
            "idempotency_key": idempotency_key,
            "workflow_id": workflow_id,
            "tenant_id": tenant_id,
            "agent": agent,
        }
        grant = check_grant(signed, self._keyring, expected=expected, now=now)
        if not self._consume(grant.grant_id, key=idempotency_key):
            raise GrantRefusedError(
                "GRANT_REUSED", f"the authorization for {tool} was used before: each one permits one call"
            )
        return grant


# -- step tickets and approval tokens --------------------------------------------------------------------------

_TICKET_DOMAIN = b"baton.step-ticket.v1\x00"
_APPROVAL_DOMAIN = b"baton.approval.v1\x00"
DEFAULT_TICKET_TTL_S = 3600.0


def _signed(signer: Identity, domain: bytes, name: str, body: Mapping[str, Any]) -> str:
    """body signed by signer under domain (so no other kind of signature passes for it), as JSON."""
    signature = base64.b64encode(signer.sign(domain + canonical_bytes(dict(body)))).decode()
    return json.dumps({name: dict(body), "key_id": signer.key_id, "signature": signature})


def _verified(text: str, keyring: Keyring, domain: bytes, name: str, *, role: str, code: str, what: str) -> Any:
    """The signed body of text, if role signed it under domain; GrantRefusedError(code) otherwise."""
    try:
        raw = json.loads(text)
        body = raw[name]
        signer = keyring.verify(
            raw["key_id"].encode(), base64.b64decode(raw["signature"]), domain + canonical_bytes(body)
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise GrantRefusedError(code, f"the {what} cannot be read: {exc}") from exc
    except AuthenticationError as exc:
        raise GrantRefusedError(code, f"the {what} does not verify: {exc}") from exc
    if signer != role:
        raise GrantRefusedError(code, f"the {what} is signed by {signer}, not by the {role}")
    return body


@dataclass(frozen=True)
class StepTicket:
    """The supervisor's word that it opened this step: which workflow, tenant, agent and context version (and
    the hash of the verified context it handed over)."""

    workflow_id: str
    tenant_id: str
    agent: str
    step_version: int
    expires_at: float
    context_sha256: str = ""
    requested_by: str = ""  # who submitted the task: never a reviewer of its approvals


def issue_ticket(supervisor: Identity, *, ttl_s: float, now: float, **binding: Any) -> str:
    """A step ticket signed by the supervisor (binding: workflow_id, tenant_id, agent, step_version,
    context_sha256), as JSON."""
    return _signed(supervisor, _TICKET_DOMAIN, "ticket", asdict(StepTicket(expires_at=now + ttl_s, **binding)))


def check_ticket(text: str, keyring: Keyring, *, expected: Mapping[str, Any], now: float) -> StepTicket:
    """The ticket, if the supervisor signed it for exactly this step and it has not expired; GrantRefusedError
    (STEP_NOT_OPEN) otherwise: the guard authorizes calls only of steps the supervisor opened."""
    if not text:
        raise GrantRefusedError(
            "STEP_NOT_OPEN", "the request shows no step ticket: only steps the supervisor opened call tools"
        )
    body = _verified(
        text, keyring, _TICKET_DOMAIN, "ticket", role=identity.SUPERVISOR, code="STEP_NOT_OPEN", what="step ticket"
    )
    try:
        ticket = StepTicket(**body)
    except TypeError as exc:
        raise GrantRefusedError("STEP_NOT_OPEN", f"the step ticket cannot be read: {exc}") from exc
    differing = sorted(k for k, v in expected.items() if asdict(ticket).get(k) != v)
    if differing:
        raise GrantRefusedError(
            "STEP_NOT_OPEN", f"the step ticket is for another step ({', '.join(differing)} differ): refused"
        )
    if now > ticket.expires_at:
        raise GrantRefusedError("STEP_NOT_OPEN", "the step ticket expired: the step is long over")
    return ticket


@dataclass(frozen=True)
class ApprovalToken:
    """The approval service's word that humans approved one exact action (by its digest)."""

    approval_id: str
    action_digest: str
    decided_by: tuple[str, ...]
    expires_at: float


def issue_approval_token(
    approvals: Identity, *, approval_id: str, action_digest: str, decided_by: tuple[str, ...], expires_at: float
) -> str:
    """An approval token signed by the approval service, as JSON."""
    token = ApprovalToken(approval_id, action_digest, tuple(decided_by), expires_at)
    return _signed(approvals, _APPROVAL_DOMAIN, "approval", {**asdict(token), "decided_by": list(token.decided_by)})


def check_approval_token(text: str, keyring: Keyring, *, action_digest: str, now: float) -> ApprovalToken:
    """The token, if the approval service signed it for exactly this action and it has not expired;
    GrantRefusedError(APPROVAL_NOT_VALID) otherwise (the call then needs a new approval)."""
    body = _verified(
        text,
        keyring,
        _APPROVAL_DOMAIN,
        "approval",
        role=identity.APPROVALS,
        code="APPROVAL_NOT_VALID",
        what="approval",
    )
    try:
        token = ApprovalToken(
            approval_id=str(body["approval_id"]),
            action_digest=str(body["action_digest"]),
            decided_by=tuple(str(r) for r in body["decided_by"]),
            expires_at=float(body["expires_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise GrantRefusedError("APPROVAL_NOT_VALID", f"the approval cannot be read: {exc}") from exc
    if token.action_digest != action_digest:
        raise GrantRefusedError(
            "APPROVAL_NOT_VALID",
            f"approval {token.approval_id} was for another action (its tool, arguments, key, context or policy "
            "version differ): it does not apply to this call",
        )
    if now > token.expires_at:
        raise GrantRefusedError("APPROVAL_NOT_VALID", f"approval {token.approval_id} expired")
    return token
