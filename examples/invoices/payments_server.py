"""The payments service, the example's MCP tool: an MCP server (stdio) with one tool, `pay_invoice`.

It knows nothing about Baton or idempotency keys: every call pays, and appends the payment to
data/payments.jsonl. Baton's tool ledger is what makes a redelivered step call it once.
Baton starts it itself (workflows/tools.yaml: `python -m payments_server`).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel

from invoice_tools.store import payments_path

server = MCPServer("payments")


class Payment(BaseModel):
    """A payment sent to a vendor."""

    payment_id: str
    invoice_id: str
    vendor: str
    amount: float
    currency: str
    status: str


@server.tool()
def pay_invoice(invoice_id: str, vendor: str, amount: float, currency: str) -> Payment:
    """Pay a vendor for an invoice. Irreversible: the money leaves the account."""
    payment = Payment(
        payment_id=f"pay-{uuid.uuid4().hex[:12]}",
        invoice_id=invoice_id,
        vendor=vendor,
        amount=amount,
        currency=currency,
        status="sent",
    )
    path = payments_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({**payment.model_dump(), "at": datetime.now(UTC).isoformat()}) + "\n")
    return payment


if __name__ == "__main__":
    server.run("stdio")
