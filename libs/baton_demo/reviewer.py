"""A scripted reviewer team for the demo and the end-to-end tests: decides pending approvals through the approval
service's HTTP API, as a person on the reviewer page (or a Slack bot) would, by a fixed rule.

The rule is deterministic per action, so a run on Kafka ends every workflow as the same run on the embedded mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

log = logging.getLogger(__name__)

# The demo's reviewers and their tokens (workflows/reviewers.yaml holds only their sha256): demo only.
DEMO_TOKENS: dict[str, str] = {
    "alice": "alice-demo-token",
    "bob": "bob-demo-token",
    "carol": "carol-demo-token",
}
# Refunds up to this are approved; larger ones are rejected and sent to finance.
REFUND_CEILING = 800.0

Verdict = tuple[Literal["approve", "reject"], str]
Rule = Callable[[Mapping[str, Any]], Verdict]


def arguments_of(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The action's arguments, from the summary's plan rows."""
    changes = summary.get("what_changes") or {}
    return {row["argument"]: row["value"] for row in changes.get("plan", [])}


def demo_rule(summary: Mapping[str, Any]) -> Verdict:
    """Refunds up to REFUND_CEILING approved, larger ones rejected; regulatory filings approved."""
    amount = arguments_of(summary).get("amount")
    if isinstance(amount, int | float) and amount > REFUND_CEILING:
        return "reject", f"a refund of {amount:.2f} is over the {REFUND_CEILING:.0f} ceiling: finance must decide"
    return "approve", "checked against the ticket and the order"


@dataclass
class ScriptedReviewer:
    """Polls the pending approvals and decides each with as many distinct reviewers as it needs."""

    client: httpx.AsyncClient
    tokens: Mapping[str, str] = field(default_factory=lambda: dict(DEMO_TOKENS))
    rule: Rule = demo_rule
    poll_s: float = 0.05
    approved: int = 0
    rejected: int = 0

    def _auth(self, reviewer: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[reviewer]}"}

    async def review_once(self) -> int:
        """Decide every pending approval the first reviewer sees; returns how many were decided."""
        first = next(iter(self.tokens))
        listed = await self.client.get("/api/approvals", headers=self._auth(first))
        listed.raise_for_status()
        decided = 0
        for summary in listed.json():
            approval_id = summary["id"]
            kind, reason = self.rule(summary)
            voters = list(self.tokens) if kind == "approve" else [first]
            needed = int(summary.get("required", 1)) if kind == "approve" else 1
            state = ""
            for reviewer in voters[:needed]:
                answer = await self.client.post(
                    f"/api/approvals/{approval_id}/{kind}",
                    json={"digest": summary["digest"], "reason": reason},
                    headers=self._auth(reviewer),
                )
                if answer.status_code >= 400:
                    # 409: voted already (a poll that raced an earlier one); anything else is worth a line.
                    if answer.status_code != 409:
                        log.warning("reviewer %s could not %s %s: %s", reviewer, kind, approval_id, answer.text)
                    continue
                state = answer.json().get("state", "")
            if state in ("APPROVED", "REJECTED"):
                decided += 1
                self.approved += state == "APPROVED"
                self.rejected += state == "REJECTED"
        return decided

    async def run(self) -> None:
        """Review until cancelled."""
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self.review_once()
            await asyncio.sleep(self.poll_s)
