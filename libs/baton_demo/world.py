"""The "world": a small real SQLite database the reference workflows' tools act on.

Every row carries a checksum of its content so a test can prove no record was corrupted,
and every write tool is idempotent by key, so a redelivered call never acts twice.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baton.ledger import SqliteFile
from baton.tools.base import ToolError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL,
    country TEXT NOT NULL, risk_score INTEGER NOT NULL, checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL, valid INTEGER NOT NULL, checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
    amount REAL NOT NULL, refunded REAL NOT NULL DEFAULT 0, checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (id TEXT PRIMARY KEY, order_id TEXT NOT NULL REFERENCES orders(id),
    reason TEXT NOT NULL, requested_amount REAL NOT NULL, checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS filings (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL UNIQUE REFERENCES customers(id),
    risk_score INTEGER NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refunds (id TEXT PRIMARY KEY, order_id TEXT NOT NULL REFERENCES orders(id),
    amount REAL NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tool_calls (idempotency_key TEXT PRIMARY KEY, tool TEXT NOT NULL,
    result_json TEXT NOT NULL, executions INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS executions (seq INTEGER PRIMARY KEY AUTOINCREMENT, tool TEXT NOT NULL,
    workflow_id TEXT NOT NULL, tenant_id TEXT NOT NULL, at REAL NOT NULL);
"""

_CHECKED = {
    "customers": ("id", "tenant_id", "name", "country", "risk_score"),
    "documents": ("id", "customer_id", "kind", "valid"),
    "orders": ("id", "customer_id", "amount", "refunded"),
    "tickets": ("id", "order_id", "reason", "requested_amount"),
    "filings": ("id", "customer_id", "risk_score", "idempotency_key"),
    "refunds": ("id", "order_id", "amount", "idempotency_key"),
}


# Every row belongs to the tenant of its customer: documents, orders and filings through customer_id,
# tickets and refunds through their order. An argument naming a row -> the SQL finding its tenant.
_OWNER_OF: dict[str, str] = {
    "customer_id": "SELECT tenant_id FROM customers WHERE id = ?",
    "ticket_id": "SELECT c.tenant_id FROM tickets t JOIN orders o ON o.id = t.order_id "
    "JOIN customers c ON c.id = o.customer_id WHERE t.id = ?",
}

OWNED_ARGUMENTS = frozenset(_OWNER_OF)


def seeded_tenant(index: int) -> str:
    """The tenant seed() gives customer `index` (and its rows); the demo submits its tasks under the same."""
    return f"tenant-{index % 3}"


class WorldSchemaError(Exception):
    """The world database was made by an older Baton and lacks what this one needs."""


def _checksum(table: str, row: Mapping[str, Any]) -> str:
    content = json.dumps([table, *[row[c] for c in _CHECKED[table]]], sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()


@dataclass(frozen=True)
class WorldIntegrityReport:
    """What verify() found: corrupted rows and broken invariants (empty when the world is sound)."""

    problems: list[str]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.problems


class World:
    """Connection to the world database (safe to share between threads and processes).

    One connection, reused, in WAL mode (`baton.ledger.SqliteFile`). Seeding and reads commit without waiting
    for the disk; a write tool's effect commits durably (synchronous=FULL) before its result is returned, so no
    step reports an effect the world could still lose: the world is the system of record of its own effects,
    apart from the agent's ledger (another file) which records the result after.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, _SCHEMA)
        # The connection and its re-entrant lock (a tool call's reads run inside its own transaction).
        self._db, self._lock = self._file.db, self._file.lock
        self._tx, self._one = self._file.tx, self._file.one
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(customers)")}
        if "tenant_id" not in columns:
            self._file.close()
            raise WorldSchemaError(
                f"{path} was created before world records belonged to tenants (customers has no tenant_id): "
                "delete it and seed a new world"
            )

    def close(self) -> None:
        # Under the lock: a tool call still running in a worker thread finishes first.
        self._file.close()

    def _insert(self, db: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
        row = dict(row, checksum=_checksum(table, row))
        cols = ", ".join(row)
        db.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    # -- seeding -----------------------------------------------------------------------------------

    def rewrite_ticket(self, ticket_id: str, reason: str) -> None:
        """Give a ticket another reason text (what a customer wrote: the tests plant PII or an injection in it)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
            if row is None:
                raise KeyError(ticket_id)
            changed = {k: row[k] for k in row.keys() if k != "checksum"} | {"reason": reason}  # noqa: SIM118 (a Row iterates values)
            db.execute(
                "UPDATE tickets SET reason = ?, checksum = ? WHERE id = ?",
                (reason, _checksum("tickets", changed), ticket_id),
            )

    def seed(self, *, customers: int = 300, seed: int = 7) -> None:
        """Fill an empty world deterministically: customers, documents, orders, tickets."""
        rnd = random.Random(seed)
        with self._tx() as db:
            if db.execute("SELECT COUNT(*) FROM customers").fetchone()[0]:
                return
            for i in range(customers):
                cid = f"cust-{i:05d}"
                risk = rnd.choice([rnd.randint(5, 60)] * 9 + [rnd.randint(70, 95)])
                self._insert(
                    db,
                    "customers",
                    {
                        "id": cid,
                        "tenant_id": seeded_tenant(i),
                        "name": f"Customer {i}",
                        "country": rnd.choice(["DE", "FR", "NL", "US", "JP"]),
                        "risk_score": risk,
                    },
                )
                for kind in ("passport", "proof_of_address"):
                    self._insert(
                        db, "documents", {"id": f"doc-{i:05d}-{kind}", "customer_id": cid, "kind": kind, "valid": 1}
                    )
                amount = float(rnd.randint(20, 1200))
                self._insert(
                    db, "orders", {"id": f"ord-{i:05d}", "customer_id": cid, "amount": amount, "refunded": 0.0}
                )
                requested = float(min(amount, rnd.choice([rnd.randint(10, 400)] * 3 + [rnd.randint(501, 1200)])))
                self._insert(
                    db,
                    "tickets",
                    {
                        "id": f"tkt-{i:05d}",
                        "order_id": f"ord-{i:05d}",
                        "reason": rnd.choice(["damaged", "late", "wrong item"]),
                        "requested_amount": requested,
                    },
                )

    def customer_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM customers ORDER BY id")]

    def ticket_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM tickets ORDER BY id")]

    def tenant_of(self, argument: str, value: Any) -> str | None:
        """The tenant owning the row an argument names (customer_id, ticket_id); None when there is no such row
        or the argument names no record."""
        sql = _OWNER_OF.get(argument)
        if sql is None:
            return None
        row = self._one(sql, value)
        return str(row["tenant_id"]) if row is not None else None

    # -- tools -------------------------------------------------------------------------------------

    def _customer(self, customer_id: Any) -> dict[str, Any]:
        row = self._one("SELECT id, name, country, risk_score FROM customers WHERE id = ?", customer_id)
        if row is None:
            raise ToolError("NOT_FOUND", f"no customer {customer_id!r}; check the customer_id in the task input")
        return row

    def _ticket(self, ticket_id: Any) -> dict[str, Any]:
        row = self._one("SELECT id, order_id, reason, requested_amount FROM tickets WHERE id = ?", ticket_id)
        if row is None:
            raise ToolError("NOT_FOUND", f"no ticket {ticket_id!r}; check the ticket_id in the task input")
        return row

    def lookup_customer(self, customer_id: str) -> dict[str, Any]:
        return self._customer(customer_id)

    def verify_identity(self, customer_id: str) -> dict[str, Any]:
        customer = self._customer(customer_id)
        return {"verified": True, "method": "document_match", "name": customer["name"]}

    def check_documents(self, customer_id: str) -> dict[str, Any]:
        self._customer(customer_id)
        with self._lock:
            rows = [
                dict(r)
                for r in self._db.execute(
                    "SELECT kind, valid FROM documents WHERE customer_id = ? ORDER BY kind", (customer_id,)
                )
            ]
        return {"kinds": [r["kind"] for r in rows], "all_valid": all(r["valid"] for r in rows), "count": len(rows)}

    def screen_sanctions(self, customer_id: str) -> dict[str, Any]:
        customer = self._customer(customer_id)
        return {"clear": True, "risk_score": customer["risk_score"]}

    def lookup_ticket(self, ticket_id: str) -> dict[str, Any]:
        return self._ticket(ticket_id)

    def lookup_order(self, ticket_id: str) -> dict[str, Any]:
        ticket = self._ticket(ticket_id)
        row = self._one("SELECT id, customer_id, amount, refunded FROM orders WHERE id = ?", ticket["order_id"])
        assert row is not None
        return row

    def preview_refund(self, ticket_id: str) -> dict[str, Any]:
        order = self.lookup_order(ticket_id)
        ticket = self._ticket(ticket_id)
        amount = max(0.0, min(ticket["requested_amount"], order["amount"] - order["refunded"]))
        return {"amount": amount, "currency": "EUR", "order_id": order["id"]}

    def _idempotent(self, key: str, tool: str, act: Callable[[sqlite3.Connection], dict[str, Any]]) -> dict[str, Any]:
        with self._tx(durable=True) as db:
            done = db.execute("SELECT result_json FROM tool_calls WHERE idempotency_key = ?", (key,)).fetchone()
            if done is not None:
                db.execute("UPDATE tool_calls SET executions = executions + 1 WHERE idempotency_key = ?", (key,))
                result: dict[str, Any] = json.loads(done[0])
                return result
            result = act(db)
            db.execute(
                "INSERT INTO tool_calls (idempotency_key, tool, result_json) VALUES (?, ?, ?)",
                (key, tool, json.dumps(result)),
            )
            return result

    def file_regulatory_report(self, customer_id: str, risk_score: int, *, idempotency_key: str) -> dict[str, Any]:
        self._customer(customer_id)

        def act(db: sqlite3.Connection) -> dict[str, Any]:
            if db.execute("SELECT 1 FROM filings WHERE customer_id = ?", (customer_id,)).fetchone():
                raise ToolError("ALREADY_FILED", f"a report for {customer_id} was filed by another call")
            filing_id = f"fil-{uuid.uuid5(uuid.NAMESPACE_URL, idempotency_key).hex[:12]}"
            self._insert(
                db,
                "filings",
                {
                    "id": filing_id,
                    "customer_id": customer_id,
                    "risk_score": int(risk_score),
                    "idempotency_key": idempotency_key,
                },
            )
            return {"filing_id": filing_id, "customer_id": customer_id}

        return self._idempotent(idempotency_key, "file_regulatory_report", act)

    def issue_refund(self, ticket_id: str, amount: float, *, idempotency_key: str) -> dict[str, Any]:
        ticket = self._ticket(ticket_id)

        def act(db: sqlite3.Connection) -> dict[str, Any]:
            order = dict(db.execute("SELECT * FROM orders WHERE id = ?", (ticket["order_id"],)).fetchone())
            if amount <= 0 or order["refunded"] + amount > order["amount"] + 1e-9:
                raise ToolError("REFUND_EXCEEDS_ORDER", f"refund of {amount} exceeds what is left on {order['id']}")
            refund_id = f"ref-{uuid.uuid5(uuid.NAMESPACE_URL, idempotency_key).hex[:12]}"
            self._insert(
                db,
                "refunds",
                {"id": refund_id, "order_id": order["id"], "amount": float(amount), "idempotency_key": idempotency_key},
            )
            order["refunded"] = order["refunded"] + float(amount)
            db.execute(
                "UPDATE orders SET refunded = ?, checksum = ? WHERE id = ?",
                (order["refunded"], _checksum("orders", order), order["id"]),
            )
            return {"refund_id": refund_id, "amount": float(amount), "order_id": order["id"]}

        return self._idempotent(idempotency_key, "issue_refund", act)

    def check_tenant(self, tool: str, arguments: Mapping[str, Any], tenant_id: str) -> None:
        # Ownership never changes once seeded, so checking before the tool's own transaction is race-free.
        owned = sorted(arguments.keys() & _OWNER_OF.keys())
        if not owned:
            # Fail closed: a call that names no record of a tenant cannot be checked, so it does not run.
            raise ToolError(
                "BAD_ARGUMENTS",
                f"{tool} got arguments {sorted(arguments)}, none naming a record: pass one of {sorted(_OWNER_OF)}",
            )
        for argument in owned:
            if not isinstance(arguments[argument], str | int | float):
                raise ToolError("BAD_ARGUMENTS", f"{tool} got {argument}={arguments[argument]!r}: send an id")
            owner = self.tenant_of(argument, arguments[argument])
            if owner is not None and owner != tenant_id:
                raise ToolError(
                    "TENANT_MISMATCH",
                    f"{tool} was called for tenant {tenant_id!r} with {argument}={arguments[argument]!r}, a record "
                    "of another tenant: a workflow acts only on its own tenant's records; submit the task under "
                    "the tenant that owns the record",
                )

    # -- the execution journal: every tool call that reached the world, reads included, in order --------

    def record_execution(self, tool: str, *, workflow_id: str, tenant_id: str) -> None:
        """Journal that a tool started executing here (what the kill switch's tests count)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO executions (tool, workflow_id, tenant_id, at) VALUES (?, ?, ?, ?)",
                (tool, workflow_id, tenant_id, time.time()),
            )

    def last_execution(self) -> int:
        """Sequence number of the latest tool execution journaled (0: none)."""
        row = self._one("SELECT COALESCE(MAX(seq), 0) AS seq FROM executions")
        return int(row["seq"]) if row is not None else 0

    def executions_after(self, seq: int) -> list[dict[str, Any]]:
        """Tool executions journaled after seq, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM executions WHERE seq > ? ORDER BY seq", (seq,)).fetchall()
        return [dict(r) for r in rows]

    # -- integrity ---------------------------------------------------------------------------------

    def verify(self) -> WorldIntegrityReport:
        """Recompute every row checksum and check the invariants tools must keep."""
        problems: list[str] = []
        counts: dict[str, int] = {}
        with self._lock:
            db = self._db
            for table, cols in _CHECKED.items():
                rows = [dict(r) for r in db.execute(f"SELECT {', '.join(cols)}, checksum FROM {table}")]
                counts[table] = len(rows)
                for row in rows:
                    if _checksum(table, row) != row["checksum"]:
                        problems.append(f"{table} row {row['id']} does not match its checksum (corrupted)")
            for oid, amount, refunded, total in db.execute(
                "SELECT o.id, o.amount, o.refunded, COALESCE(SUM(r.amount), 0) FROM orders o "
                "LEFT JOIN refunds r ON r.order_id = o.id GROUP BY o.id"
            ):
                if abs(refunded - total) > 1e-6 or refunded > amount + 1e-6:
                    problems.append(f"order {oid}: refunded {refunded}, refunds sum {total}, amount {amount}")
            for (key,) in db.execute(
                "SELECT idempotency_key FROM refunds UNION ALL SELECT idempotency_key FROM filings "
                "EXCEPT SELECT idempotency_key FROM tool_calls"
            ):
                problems.append(f"side effect {key} has no idempotency record")
            counts["tool_calls_repeated"] = db.execute(
                "SELECT COUNT(*) FROM tool_calls WHERE executions > 1"
            ).fetchone()[0]
        return WorldIntegrityReport(problems=problems, counts=counts)
