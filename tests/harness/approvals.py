"""The approval service under test: reviewers with known tokens, approval requests, uvicorn on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from baton.approvals.model import ActionBinding, ApprovalRequest, Reviewer
from baton.context import context_sha256
from services.approvals.reviewers import Reviewers, token_sha256

QUEUE = "support-leads"
OTHER_QUEUE = "compliance-reviewers"
# name -> (token, queues, roles)
PEOPLE: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "alice": ("alice-token", (QUEUE,), ("approver",)),
    "bob": ("bob-token", (QUEUE,), ("approver",)),
    "carol": ("carol-token", (QUEUE, OTHER_QUEUE), ("approver",)),
    "dave": ("dave-token", (OTHER_QUEUE,), ("approver",)),
    "victor": ("victor-token", ("*",), ("viewer",)),
}
TOKEN = {name: token for name, (token, _, _) in PEOPLE.items()}


def reviewers() -> Reviewers:
    """The test's reviewers: alice, bob, carol approve on QUEUE; dave only on OTHER_QUEUE; victor views all."""
    return Reviewers(
        (Reviewer(name=name, queues=frozenset(queues), roles=frozenset(roles)), token_sha256(token))
        for name, (token, queues, roles) in PEOPLE.items()
    )


def approval_request(
    approval_id: str, *, queue: str = QUEUE, required: int = 1, amount: int = 120, ttl_s: float = 3600.0
) -> ApprovalRequest:
    """A refund waiting for `required` approvers of `queue`."""
    arguments = {"ticket_id": f"T-{approval_id}", "amount": amount}
    action = ActionBinding(
        workflow_id=f"wf-{approval_id}",
        tenant_id="acme",
        agent="refund_agent",
        tool="issue_refund",
        arguments_json=json.dumps(arguments, sort_keys=True),
        arguments_sha256=context_sha256(arguments),
        idempotency_key=f"idem-{approval_id}",
        context_sha256=context_sha256({"ticket_id": f"T-{approval_id}"}),
        policy_version="p1",
        step_version=1,
    )
    now = time.time()
    return ApprovalRequest(
        approval_id=approval_id,
        action=action,
        workflow_type="support_refund",
        queue=queue,
        required_approvals=required,
        expires_at=now + ttl_s,
        fallback="reject",
        escalate_to=None,
        reason="refunds above 100 USD need a support lead",
        rationale=f"the customer of T-{approval_id} was charged twice",
        confidence=0.82,
        decision_type="refund",
        tier="WRITE",
        preview={"before": {"refunded": 0, "status": "charged"}, "after": {"refunded": amount, "status": "refunded"}},
        lineage=("triage_agent", "refund_preview"),
        requested_at=now,
        bound_from={"ticket_id": "ticket_id", "amount": "refund_preview.amount"},
    )


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN[name]}"}


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run app under uvicorn on this loop; yields its base URL. The socket listens before uvicorn starts, so a
    client may connect at once (the kernel queues it) and no port can be taken in between."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def votes(summary: dict[str, Any]) -> tuple[Any, Any]:
    """(approved so far, required) as the summary words them."""
    return summary.get("approved"), summary.get("required")
