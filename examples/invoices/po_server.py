"""The purchase-order service, the example's HTTP tool: `python po_server.py` serves it on 127.0.0.1:8765.

POST /check with {"invoice_id", "po_number", "vendor", "amount"} answers whether the invoice matches its
purchase order. Every request needs `Authorization: Bearer $ACME_PO_TOKEN`; each one is logged to
data/po_requests.jsonl (whether its token was right), so a test can see what reached the server.
"""

from __future__ import annotations

import hmac
import json
import os
import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from invoice_tools.models import PurchaseOrderCheck
from invoice_tools.store import connect, po_requests_path

TOKEN_ENV = "ACME_PO_TOKEN"
PORT = int(os.environ.get("PO_SERVER_PORT", "8765"))


def _log(entry: dict[str, Any]) -> None:
    path = po_requests_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _authorized(request: Request) -> bool:
    token = os.environ.get(TOKEN_ENV, "")
    given = request.headers.get("authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def check_invoice(invoice_id: str, po_number: str, vendor: str, amount: float) -> PurchaseOrderCheck:
    """Compare an invoice with its purchase order: same vendor, amount within what the order authorises."""
    with connect() as conn:
        po = conn.execute("SELECT * FROM purchase_orders WHERE po_number = ?", (po_number,)).fetchone()
    reasons: list[str] = []
    if po is None:
        reasons.append(f"there is no purchase order {po_number}")
    else:
        if po["vendor"] != vendor:
            reasons.append(f"the purchase order is for {po['vendor']}, the invoice is from {vendor}")
        if amount > po["amount"]:
            reasons.append(f"the invoice bills {amount:.2f}, the purchase order authorises {po['amount']:.2f}")
    return PurchaseOrderCheck(
        invoice_id=invoice_id,
        po_number=po_number,
        matches=not reasons,
        invoice_amount=amount,
        po_amount=None if po is None else po["amount"],
        reasons=reasons,
    )


async def check(request: Request) -> JSONResponse:
    """POST /check: the verdict as JSON; 401 without the right bearer token, 422 on a malformed body."""
    authorized = _authorized(request)
    try:
        body = await request.json()
        args = (str(body["invoice_id"]), str(body["po_number"]), str(body["vendor"]), float(body["amount"]))
    except (ValueError, KeyError, TypeError) as exc:
        _log({"authorized": authorized, "error": "malformed body"})
        return JSONResponse({"error": f"expected invoice_id, po_number, vendor, amount: {exc}"}, status_code=422)
    _log({"authorized": authorized, "invoice_id": args[0], "po_number": args[1]})
    if not authorized:
        return JSONResponse({"error": f"missing or wrong bearer token (the server's is ${TOKEN_ENV})"}, status_code=401)
    return JSONResponse(check_invoice(*args).model_dump())


app = Starlette(routes=[Route("/check", check, methods=["POST"])])


if __name__ == "__main__":
    if not os.environ.get(TOKEN_ENV):
        sys.exit(f"set {TOKEN_ENV} to the bearer token callers must send (any secret string), then start again")
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
