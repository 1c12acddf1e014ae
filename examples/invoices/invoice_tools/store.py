"""The example's data, under `data/` (INVOICES_DATA_DIR): invoices and purchase orders in SQLite, and two
files the servers append to, so anyone can count what happened.

`python -m invoice_tools seed` creates it afresh; the tools and the purchase-order server read it. Tenants
own their invoices: a tool never returns or changes another tenant's.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TENANT = "acme"

# (invoice id, vendor, PO number, currency, [(description, quantity, unit price)])
INVOICES: list[tuple[str, str, str, str, list[tuple[str, int, float]]]] = [
    ("INV-1001", "Northwind Paper", "PO-501", "EUR", [("A4 paper, box", 40, 30.00)]),
    ("INV-1002", "Contoso Cloud", "PO-502", "EUR", [("compute, October", 1, 4800.00)]),
    ("INV-1003", "Fabrikam Tools", "PO-503", "EUR", [("torque wrench", 11, 250.00)]),
    ("INV-1004", "Litware Servers", "PO-504", "EUR", [("rack server", 5, 3700.00)]),
    ("INV-1005", "Tailspin Coffee", "PO-505", "EUR", [("coffee beans, kg", 14, 25.00)]),
]

# (PO number, vendor, authorised amount): PO-503 authorises 10 wrenches, the invoice bills 11.
PURCHASE_ORDERS: list[tuple[str, str, float]] = [
    ("PO-501", "Northwind Paper", 1200.00),
    ("PO-502", "Contoso Cloud", 4800.00),
    ("PO-503", "Fabrikam Tools", 2500.00),
    ("PO-504", "Litware Servers", 18500.00),
    ("PO-505", "Tailspin Coffee", 350.00),
]

_SCHEMA = """
CREATE TABLE invoices (
    invoice_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, vendor TEXT NOT NULL, po_number TEXT NOT NULL,
    currency TEXT NOT NULL, lines_json TEXT NOT NULL
);
CREATE TABLE purchase_orders (
    po_number TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, vendor TEXT NOT NULL, amount REAL NOT NULL
);
-- One row per idempotency key: a retried or redelivered call finds its row instead of adding another.
CREATE TABLE scheduled_payments (
    idempotency_key TEXT PRIMARY KEY, schedule_id TEXT NOT NULL UNIQUE, tenant_id TEXT NOT NULL,
    invoice_id TEXT NOT NULL, vendor TEXT NOT NULL, amount REAL NOT NULL, currency TEXT NOT NULL
);
"""


def data_dir() -> Path:
    """INVOICES_DATA_DIR, else data/ under the working directory."""
    return Path(os.environ.get("INVOICES_DATA_DIR", "data"))


def database_path() -> Path:
    """The invoices and purchase orders."""
    return data_dir() / "invoices.db"


def payments_path() -> Path:
    """One JSON line per payment the payments server made."""
    return data_dir() / "payments.jsonl"


def po_requests_path() -> Path:
    """One JSON line per request the purchase-order server answered."""
    return data_dir() / "po_requests.jsonl"


@contextmanager
def connect() -> Iterator[sqlite3.Connection]:
    """A connection to the seeded database, one transaction, closed after; says how to seed a missing one."""
    path = database_path()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `python -m invoice_tools seed` first")
    conn = sqlite3.connect(path, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def seed() -> Path:
    """Create the database afresh with the example's invoices and purchase orders; forget earlier effects."""
    path = database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, payments_path(), po_requests_path()):
        stale.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(_SCHEMA)
        conn.executemany(
            "INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?)",
            [(i, TENANT, v, po, cur, json.dumps(lines)) for i, v, po, cur, lines in INVOICES],
        )
        conn.executemany(
            "INSERT INTO purchase_orders VALUES (?, ?, ?, ?)", [(po, TENANT, v, a) for po, v, a in PURCHASE_ORDERS]
        )
    conn.close()
    return path
