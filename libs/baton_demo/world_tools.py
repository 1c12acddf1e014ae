"""The reference world as a tool pack: its nine tools declared with `python_tool`, one pack among others.

Every tool checks that the records it names belong to the calling tenant (ToolContext.tenant_id) before it
runs; the two writes honour the idempotency key themselves (the world keeps its own record of keys, so even a
call that reaches it twice acts once). `workflows/tools.yaml` loads this module by path; `baton_tools()`
opens the world at BATON_WORLD_DB (default .baton/world.db).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from baton.tools import PythonTool, ToolContext, python_tool, tools_of
from baton_demo.world import World


class Customer(BaseModel):
    id: str
    name: str
    country: str
    risk_score: int


class Identity(BaseModel):
    verified: bool
    method: str
    name: str


class Documents(BaseModel):
    kinds: list[str]
    all_valid: bool
    count: int


class Sanctions(BaseModel):
    clear: bool
    risk_score: int


class Ticket(BaseModel):
    id: str
    order_id: str
    reason: str
    requested_amount: float


class Order(BaseModel):
    id: str
    customer_id: str
    amount: float
    refunded: float


class RefundPreview(BaseModel):
    amount: float
    currency: str
    order_id: str


class OrderBalance(BaseModel):
    order_id: str
    amount: float
    refunded: float
    left_to_refund: float


class RefundDryRun(BaseModel):
    """What issue_refund would change on the order: its balance before and after (nothing is written)."""

    before: OrderBalance
    after: OrderBalance


class Filing(BaseModel):
    filing_id: str
    customer_id: str


class Refund(BaseModel):
    refund_id: str
    amount: float
    order_id: str


class WorldTools:
    """The world's tools over one world, opened on the first call (listing the tools touches no file)."""

    def __init__(self, world: World | Callable[[], World]) -> None:
        self._world = world

    @property
    def world(self) -> World:
        if not isinstance(self._world, World):
            self._world = self._world()
        return self._world

    def _tenant(self, tool: str, ctx: ToolContext, **arguments: Any) -> None:
        self.world.check_tenant(tool, arguments, ctx.tenant_id)
        self.world.record_execution(tool, workflow_id=ctx.workflow_id, tenant_id=ctx.tenant_id)

    @python_tool(version="1", tier="READ", idempotent=True)
    def lookup_customer(self, customer_id: str, ctx: ToolContext) -> Customer:
        """A customer's name, country and risk score."""
        self._tenant("lookup_customer", ctx, customer_id=customer_id)
        return Customer.model_validate(self.world.lookup_customer(customer_id))

    @python_tool(version="1", tier="READ", idempotent=True)
    def verify_identity(self, customer_id: str, ctx: ToolContext) -> Identity:
        """Whether the customer's identity matches their documents."""
        self._tenant("verify_identity", ctx, customer_id=customer_id)
        return Identity.model_validate(self.world.verify_identity(customer_id))

    @python_tool(version="1", tier="READ", idempotent=True)
    def check_documents(self, customer_id: str, ctx: ToolContext) -> Documents:
        """The customer's documents on file and whether all are valid."""
        self._tenant("check_documents", ctx, customer_id=customer_id)
        return Documents.model_validate(self.world.check_documents(customer_id))

    @python_tool(version="1", tier="READ", idempotent=True)
    def screen_sanctions(self, customer_id: str, ctx: ToolContext) -> Sanctions:
        """Sanctions screening result and risk score."""
        self._tenant("screen_sanctions", ctx, customer_id=customer_id)
        return Sanctions.model_validate(self.world.screen_sanctions(customer_id))

    @python_tool(version="1", tier="READ", idempotent=True)
    def lookup_ticket(self, ticket_id: str, ctx: ToolContext) -> Ticket:
        """A support ticket: its order, reason and requested amount."""
        self._tenant("lookup_ticket", ctx, ticket_id=ticket_id)
        return Ticket.model_validate(self.world.lookup_ticket(ticket_id))

    @python_tool(version="1", tier="READ", idempotent=True)
    def lookup_order(self, ticket_id: str, ctx: ToolContext) -> Order:
        """The order a ticket is about."""
        self._tenant("lookup_order", ctx, ticket_id=ticket_id)
        return Order.model_validate(self.world.lookup_order(ticket_id))

    @python_tool(version="1", tier="READ", idempotent=True)
    def preview_refund(self, ticket_id: str, ctx: ToolContext) -> RefundPreview:
        """What may be refunded on a ticket (nothing changes)."""
        self._tenant("preview_refund", ctx, ticket_id=ticket_id)
        return RefundPreview.model_validate(self.world.preview_refund(ticket_id))

    @python_tool(version="1", tier="IRREVERSIBLE", idempotent=True)
    def file_regulatory_report(self, customer_id: str, risk_score: int, ctx: ToolContext) -> Filing:
        """File the regulatory report for a high-risk customer (once per customer)."""
        self._tenant("file_regulatory_report", ctx, customer_id=customer_id)
        return Filing.model_validate(
            self.world.file_regulatory_report(customer_id, risk_score, idempotency_key=ctx.idempotency_key)
        )

    @python_tool(version="1", tier="IRREVERSIBLE", idempotent=True)
    def issue_refund(self, ticket_id: str, amount: float, ctx: ToolContext) -> Refund:
        """Refund an amount on a ticket's order."""
        self._tenant("issue_refund", ctx, ticket_id=ticket_id)
        return Refund.model_validate(self.world.issue_refund(ticket_id, amount, idempotency_key=ctx.idempotency_key))

    # The dry run a reviewer reads before approving a refund (baton.tools.executor.PREVIEW_SUFFIX).
    @python_tool(name="issue_refund__preview", version="1", tier="READ", idempotent=True)
    def issue_refund_preview(self, ticket_id: str, amount: float, ctx: ToolContext) -> RefundDryRun:
        """What issue_refund would change on the ticket's order (nothing changes)."""
        self._tenant("issue_refund__preview", ctx, ticket_id=ticket_id)
        order = self.world.lookup_order(ticket_id)
        before = OrderBalance(
            order_id=order["id"],
            amount=order["amount"],
            refunded=order["refunded"],
            left_to_refund=order["amount"] - order["refunded"],
        )
        after = before.model_copy(
            update={"refunded": before.refunded + amount, "left_to_refund": before.left_to_refund - amount}
        )
        return RefundDryRun(before=before, after=after)


def world_tools(world: World) -> list[PythonTool]:
    """The world's tools over an open world."""
    return tools_of(WorldTools(world))


_OPEN: dict[Path, World] = {}


def _open(path: Path) -> World:
    if path not in _OPEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        _OPEN[path] = World(path)
    return _OPEN[path]


def baton_tools(environ: Mapping[str, str] = os.environ) -> list[PythonTool]:
    """The tools over the world at BATON_WORLD_DB (opened on the first call, once per path; seeded by `baton demo`
    or the tests)."""
    path = Path(environ.get("BATON_WORLD_DB", ".baton/world.db"))
    return tools_of(WorldTools(lambda: _open(path)))
