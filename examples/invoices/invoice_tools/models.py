"""What the invoice tools return: pydantic models, so Baton derives each tool's result schema from them."""

from __future__ import annotations

from pydantic import BaseModel


class InvoiceLine(BaseModel):
    """One billed line."""

    description: str
    quantity: int
    unit_price: float


class Invoice(BaseModel):
    """An invoice as extracted from the vendor's document."""

    invoice_id: str
    vendor: str
    po_number: str
    currency: str
    amount: float
    lines: list[InvoiceLine]


class ScheduledPayment(BaseModel):
    """A payment put on the payment run: approved against its purchase order, not paid yet."""

    schedule_id: str
    invoice_id: str
    vendor: str
    amount: float
    currency: str


class PurchaseOrderCheck(BaseModel):
    """The purchase-order server's verdict on an invoice (the HTTP tool's result)."""

    invoice_id: str
    po_number: str
    matches: bool
    invoice_amount: float
    po_amount: float | None
    reasons: list[str]
