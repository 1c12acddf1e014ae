"""The invoice workflow's Python tools: plain functions, declared with `@python_tool`.

Baton imports this package by name (`python: [invoice_tools]` in workflows/tools.yaml) and takes every
decorated function as a tool; argument and result schemas come from the type hints and pydantic models.
"""

from __future__ import annotations

import json
import uuid

from baton.tools import ToolContext, ToolError, python_tool
from invoice_tools.models import Invoice, InvoiceLine, PurchaseOrderCheck, ScheduledPayment
from invoice_tools.store import connect

__all__ = ["extract_invoice", "schedule_payment"]


def _invoice(invoice_id: str, tenant_id: str) -> Invoice:
    with connect() as conn:
        row = conn.execute("SELECT * FROM invoices WHERE invoice_id = ?", (invoice_id,)).fetchone()
    if row is None or row["tenant_id"] != tenant_id:
        # Another tenant's invoice is reported exactly like a missing one: nothing of theirs leaks.
        raise ToolError("INVOICE_NOT_FOUND", f"no invoice {invoice_id!r} for tenant {tenant_id!r}")
    lines = [InvoiceLine(description=d, quantity=q, unit_price=p) for d, q, p in json.loads(row["lines_json"])]
    return Invoice(
        invoice_id=row["invoice_id"],
        vendor=row["vendor"],
        po_number=row["po_number"],
        currency=row["currency"],
        amount=round(sum(line.quantity * line.unit_price for line in lines), 2),
        lines=lines,
    )


@python_tool(version="1", tier="READ", idempotent=True, timeout_s=5)
def extract_invoice(invoice_id: str, ctx: ToolContext) -> Invoice:
    """Read an invoice's vendor, purchase order, lines and total."""
    return _invoice(invoice_id, ctx.tenant_id)


@python_tool(version="1", tier="WRITE", idempotent=True, timeout_s=5)
def schedule_payment(invoice_id: str, po_check: PurchaseOrderCheck, ctx: ToolContext) -> ScheduledPayment:
    """Put an invoice that matches its purchase order on the payment run (once per idempotency key)."""
    if po_check.invoice_id != invoice_id:
        raise ToolError(
            "PO_CHECK_MISMATCH", f"the purchase-order check is for {po_check.invoice_id}, not {invoice_id}: refused"
        )
    if not po_check.matches:
        raise ToolError(
            "PO_MISMATCH",
            f"{invoice_id} does not match purchase order {po_check.po_number}: {'; '.join(po_check.reasons)}; "
            "nothing was scheduled, a person must resolve it with the vendor",
        )
    invoice = _invoice(invoice_id, ctx.tenant_id)  # amounts from the record, not from anything passed along
    with connect() as conn:
        # The row and its idempotency key in one statement: a retry finds the first call's row.
        conn.execute(
            "INSERT OR IGNORE INTO scheduled_payments VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                ctx.idempotency_key,
                f"sch-{uuid.uuid4().hex[:12]}",
                ctx.tenant_id,
                invoice.invoice_id,
                invoice.vendor,
                invoice.amount,
                invoice.currency,
            ),
        )
        row = conn.execute(
            "SELECT * FROM scheduled_payments WHERE idempotency_key = ?", (ctx.idempotency_key,)
        ).fetchone()
    return ScheduledPayment(
        schedule_id=row["schedule_id"],
        invoice_id=row["invoice_id"],
        vendor=row["vendor"],
        amount=row["amount"],
        currency=row["currency"],
    )
