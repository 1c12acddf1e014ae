"""Tool-call decisions from Cedar policies (`cedarpy`): authorized, denied, or approval required; default deny.

Policies live beside the workflow declarations (`policies/*.cedar`); their version, a digest of the files,
goes into every decision. Approval is asked of the policies too: a call they deny as it stands but would
permit once a human approved it needs approval; anything else they deny is denied.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import cedarpy

from baton.contracts.models import PermissionTier

POLICY_DIR = "policies"
# Baton's default policy set, used when the workflow directory brings none (`Policies.load(..., fallback=True)`).
DEFAULT_POLICIES = Path(__file__).parent / "default" / POLICY_DIR


class PolicyLoadError(ValueError):
    """A policy file that cannot be used; the message names the file."""


class Verdict(StrEnum):
    AUTHORIZED = "AUTHORIZED"
    DENIED = "DENIED"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"


@dataclass(frozen=True)
class ToolCallFacts:
    """What the guard knows of a requested call, as the policies see it."""

    agent: str
    tool: str
    tier: PermissionTier
    tenant_id: str
    workflow_type: str
    granted: bool
    needs_approval: bool
    cross_tenant: bool = False
    approved: bool = False

    def request(self, *, approved: bool) -> dict[str, Any]:
        return {
            "principal": f'Baton::Agent::"{_quoted(self.agent)}"',
            "action": 'Baton::Action::"call"',
            "resource": f'Baton::Tool::"{_quoted(self.tool)}"',
            "context": {
                "granted": self.granted,
                "tier": self.tier.value,
                "needs_approval": self.needs_approval,
                "approved": approved,
                "cross_tenant": self.cross_tenant,
                "tenant": self.tenant_id,
                "workflow_type": self.workflow_type,
            },
        }


@dataclass(frozen=True)
class Decision:
    """A verdict, the policies that decided it (by @id) and the policy version it was decided under."""

    verdict: Verdict
    policies: tuple[str, ...]
    policy_version: str
    reason: str


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


class Policies:
    """A loaded, versioned policy set."""

    def __init__(self, text: str, *, version: str, source: str = "policies") -> None:
        try:
            self._set = cedarpy.PolicySet.from_str(text)
        except ValueError as exc:
            raise PolicyLoadError(f"{source}: not valid Cedar: {exc}") from exc
        self.version = version
        self.source = source
        # Cedar names policies policy0, policy1, ...; their @id annotations are the names people wrote.
        self._names: Mapping[str, str] = {
            pid: policy.annotations.get("id", pid) for pid, policy in self._set.to_pst().static_policies.items()
        }

    @classmethod
    def load(cls, directory: Path, *, fallback: bool = False) -> Policies:
        """Every *.cedar file under `directory/policies`, in name order; version = a digest of names and texts.
        fallback: with no such file, Baton's default policies (permit granted tools by tier and approval rules,
        forbid cross-tenant and ungranted calls; libs/baton/policy/default/)."""
        files = sorted((directory / POLICY_DIR).glob("*.cedar"))
        if not files and fallback:
            return cls.load(DEFAULT_POLICIES.parent)
        if not files:
            raise PolicyLoadError(
                f"no policies in {directory / POLICY_DIR}: every tool call would be denied; add a *.cedar file"
            )
        digest = hashlib.sha256()
        texts: list[str] = []
        for path in files:
            text = path.read_text()
            digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
            texts.append(text)
            cls(text, version="", source=str(path))  # each file parses on its own: errors name it
        return cls("\n".join(texts), version=f"sha256:{digest.hexdigest()[:16]}", source=str(directory / POLICY_DIR))

    def _ask(self, facts: ToolCallFacts, *, approved: bool) -> tuple[bool, tuple[str, ...]]:
        result = cedarpy.is_authorized(facts.request(approved=approved), self._set, [])
        if result.diagnostics.errors:
            raise PolicyLoadError(f"{self.source}: evaluating a request failed: {result.diagnostics.errors}")
        return result.allowed, tuple(self._names.get(r, r) for r in result.diagnostics.reasons)

    def decide(self, facts: ToolCallFacts) -> Decision:
        """Authorized, denied (with the forbidding policies, or none matched: default deny), or approval required."""
        allowed, reasons = self._ask(facts, approved=facts.approved)
        if allowed:
            return Decision(Verdict.AUTHORIZED, reasons, self.version, f"permitted by {', '.join(reasons)}")
        if reasons:
            return Decision(
                Verdict.DENIED,
                reasons,
                self.version,
                f"{facts.agent} may not call {facts.tool}: forbidden by policy {', '.join(reasons)}",
            )
        if not facts.approved and self._ask(facts, approved=True)[0]:
            return Decision(
                Verdict.APPROVAL_REQUIRED,
                (),
                self.version,
                f"{facts.tool} ({facts.tier.value}) needs a human's approval before {facts.agent} may call it",
            )
        return Decision(
            Verdict.DENIED,
            (),
            self.version,
            f"no policy permits {facts.agent} to call {facts.tool} ({facts.tier.value}): denied by default",
        )
