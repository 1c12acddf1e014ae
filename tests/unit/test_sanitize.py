"""PII redaction: every kind is found wherever it is nested, never echoed, and near-misses stay byte-for-byte."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from baton.policy.sanitize import (
    CREDIT_CARD,
    EMAIL_ADDRESS,
    IBAN_CODE,
    PHONE_NUMBER,
    UK_NINO,
    US_SSN,
    QueryRefusedError,
    RedactingFilter,
    Sanitized,
    Sanitizer,
    tables_outside,
)

# One clear value per kind and format, as a tool result would carry it.
PLANTED: list[tuple[str, str]] = [
    (EMAIL_ADDRESS, "jane.doe@example.com"),
    (EMAIL_ADDRESS, "o.brien+refunds@mail.example.co.uk"),
    (PHONE_NUMBER, "+44 20 7946 0958"),
    (PHONE_NUMBER, "+1 415 555 2671"),
    (PHONE_NUMBER, "(415) 555-2671"),
    (PHONE_NUMBER, "020 7946 0958"),
    (PHONE_NUMBER, "+33 1 42 68 53 00"),
    (PHONE_NUMBER, "030 12345678"),
    (CREDIT_CARD, "4111 1111 1111 1111"),
    (CREDIT_CARD, "5500-0000-0000-0004"),
    (CREDIT_CARD, "4012888888881881"),
    (IBAN_CODE, "GB82 WEST 1234 5698 7654 32"),
    (IBAN_CODE, "DE89370400440532013000"),
    (US_SSN, "536-22-1234"),
    (UK_NINO, "AB123456C"),
]

FILLER = (
    "The customer reports the parcel arrived damaged; photos attached to the ticket. Warehouse confirms the "
    "batch shipped on 2026-11-20 from the Leeds depot, order ORD-2026-004417, total 1234.56 EUR. "
)


@pytest.fixture(scope="module")
def sanitizer() -> Sanitizer:
    return Sanitizer()


def _nested(clear: str) -> dict[str, object]:
    """A tool result with the value in a long text, in a dict, in a list, in a dict."""
    body = FILLER * 20 + f"Please reach me at {clear} about it. " + FILLER * 20
    return {"tool": "crm.lookup", "results": [{"ticket": {"id": 17, "body": body, "contact": clear}}]}


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize(("entity", "clear"), PLANTED, ids=[f"{e}:{c}" for e, c in PLANTED])
def test_each_kind_is_redacted_wherever_it_is_nested_and_never_echoed(
    sanitizer: Sanitizer, entity: str, clear: str
) -> None:
    result = sanitizer.sanitize(_nested(clear))
    ticket = result.value["results"][0]["ticket"]
    assert ticket["contact"] == f"<{entity}>"
    assert f"Please reach me at <{entity}> about it." in ticket["body"]
    assert ticket["body"].startswith(FILLER) and ticket["body"].endswith(FILLER)
    paths = {(f.entity_type, f.path, f.count) for f in result.findings}
    assert (entity, "$.results[0].ticket.contact", 1) in paths
    assert (entity, "$.results[0].ticket.body", 1) in paths
    assert len(paths) == 2  # the filler (dates, order numbers, amounts) is left alone
    everything = repr(result) + json.dumps(result.value) + repr(result.findings)
    assert clear not in everything
    assert clear.replace(" ", "") not in everything.replace(" ", "")


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("Tel.+44 20 7946 0958", "Tel.<PHONE_NUMBER>"),
        ("Phone:(415) 555-2671", "Phone:<PHONE_NUMBER>"),
        ("mobile: 4155552671", "mobile: <PHONE_NUMBER>"),  # a bare run counts after a phone word
        ("+44 20 7946 0958 / 020 7946 0958", "<PHONE_NUMBER> / <PHONE_NUMBER>"),
        (FILLER * 400 + "call 415.555.2671", FILLER * 400 + "call <PHONE_NUMBER>"),  # ~80 KB, at the end
    ],
)
def test_phone_numbers_in_context(sanitizer: Sanitizer, text: str, redacted: str) -> None:
    assert sanitizer.redact_text(text) == redacted


@pytest.mark.parametrize(
    "near_miss",
    [
        "4111111111111112",  # 16 digits, Luhn-invalid
        "4111 1111 1111 1112",
        "GB82WEST12345698765433",  # IBAN shape, bad checksum
        "ORD-2026-004417",
        "order 100234567",  # nine digits, not an SSN
        "PO 4500012345",
        "4155552671",  # a bare 10-digit run: an order number as often as a phone number
        "INV-2024-000123",
        "1234.56",
        "1,234,567.89 EUR",
        "2026-11-23",
        "23/11/2026",
        "2026-11-23T19:24:25.123Z",
        "1732389865",
        str(uuid.UUID("7d444840-9dc0-11d1-b245-5ffdce74fad2")),
        hashlib.sha256(b"baton").hexdigest(),
        "1Z999AA10123456784",
        "version 3.11.7 on port 8080",
        "reset_password@ (not an address)",
    ],
)
def test_near_misses_are_not_redacted(sanitizer: Sanitizer, near_miss: str) -> None:
    result = sanitizer.sanitize({"note": f"ref {near_miss} checked", "raw": near_miss})
    assert result.value == {"note": f"ref {near_miss} checked", "raw": near_miss}
    assert result.findings == ()


def test_a_pii_free_value_comes_back_byte_for_byte(sanitizer: Sanitizer) -> None:
    value = {
        "order_id": "ORD-2026-000123",
        "items": [{"sku": "AB-1234", "qty": 2, "price": "19.99", "tags": ("fragile", "gift")}],
        "total": 1234.56,
        "paid": True,
        "refund": None,
        "digest": hashlib.sha256(b"x").hexdigest(),
        "note": "Délivré le 2026-11-25 — merci! 🚚\u200b",
        "created": "2026-11-23T19:24:25.123Z",
    }
    result = sanitizer.sanitize(value)
    assert result.findings == () and not result.redacted
    assert result.value == value
    assert json.dumps(result.value, ensure_ascii=False).encode() == json.dumps(value, ensure_ascii=False).encode()
    assert isinstance(result.value["items"][0]["tags"], tuple)


def test_keys_and_numbers_are_left_alone(sanitizer: Sanitizer) -> None:
    result = sanitizer.sanitize({"jane.doe@example.com": 4111111111111111, "card": "4111111111111111"})
    assert result.value == {"jane.doe@example.com": 4111111111111111, "card": "<CREDIT_CARD>"}
    assert [f.path for f in result.findings] == ["$.card"]


def test_paths_quote_keys_that_are_not_identifiers(sanitizer: Sanitizer) -> None:
    result = sanitizer.sanitize({"first contact": ["x", "mail jane.doe@example.com or jd@example.org"]})
    assert result.findings[0].path == "$['first contact'][1]"
    assert result.findings[0].count == 2


def test_only_the_configured_kinds_are_redacted() -> None:
    emails_only = Sanitizer([EMAIL_ADDRESS])
    text = "jane.doe@example.com, +44 20 7946 0958"
    assert emails_only.redact_text(text) == "<EMAIL_ADDRESS>, +44 20 7946 0958"
    with pytest.raises(ValueError, match="PERSON"):
        Sanitizer(["PERSON"])


def test_the_findings_never_hold_the_clear_value(sanitizer: Sanitizer) -> None:
    result = sanitizer.sanitize(["536-22-1234"])
    assert result == Sanitized(["<US_SSN>"], (result.findings[0],))
    assert "536" not in repr(result.findings)


def test_the_logging_filter_redacts_message_and_arguments(
    sanitizer: Sanitizer, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("baton.test.sanitize")
    redacting = RedactingFilter(sanitizer)
    logger.addFilter(redacting)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("refund for %s to card %s", "jane.doe@example.com", "4111 1111 1111 1111")
            logger.info("customer jane.doe@example.com called from +44 20 7946 0958")
            logger.info("order %s shipped", "ORD-2026-000123")
    finally:
        logger.removeFilter(redacting)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "refund for <EMAIL_ADDRESS> to card <CREDIT_CARD>",
        "customer <EMAIL_ADDRESS> called from <PHONE_NUMBER>",
        "order ORD-2026-000123 shipped",
    ]
    assert "jane.doe" not in caplog.text and "7946" not in caplog.text


def test_the_logging_filter_redacts_a_traceback(sanitizer: Sanitizer) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(sanitizer))
    logger = logging.getLogger("baton.test.sanitize.traceback")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("no account for jane.doe@example.com")
        except ValueError:
            logger.exception("lookup failed for %s", "+44 20 7946 0958")
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    assert "lookup failed for <PHONE_NUMBER>" in logged
    assert "no account for <EMAIL_ADDRESS>" in logged and "Traceback" in logged
    assert "jane.doe" not in logged and "7946" not in logged


ALLOWED = ["orders", "customers", "sales.refunds"]


@pytest.mark.parametrize(
    ("query", "outside"),
    [
        ("SELECT id, total FROM orders WHERE id = 7", []),
        ("select * from Orders o join CUSTOMERS c on o.customer_id = c.id", []),
        ("SELECT * FROM orders o JOIN payments p ON p.order_id = o.id", ["payments"]),
        ("SELECT * FROM orders o LEFT JOIN customers c ON 1=1 CROSS JOIN staff", ["staff"]),
        ("SELECT * FROM orders WHERE customer_id IN (SELECT id FROM vip_customers)", ["vip_customers"]),
        ("SELECT (SELECT max(salary) FROM payroll) AS m FROM orders", ["payroll"]),
        ("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent", []),
        ("WITH leak AS (SELECT * FROM api_keys) SELECT * FROM leak JOIN orders ON 1=1", ["api_keys"]),
        ("WITH a AS (SELECT * FROM orders), b AS (SELECT * FROM a) SELECT * FROM b", []),
        # A CTE named like a table hides it only inside its own query.
        (
            "SELECT * FROM (WITH api_keys AS (SELECT 1 AS k) SELECT * FROM api_keys) x JOIN api_keys ON 1=1",
            ["api_keys"],
        ),
        ("WITH orders AS (SELECT * FROM payroll) SELECT * FROM orders", ["payroll"]),
        ("SELECT * FROM orders UNION SELECT * FROM users", ["users"]),
        ("SELECT * FROM sales.refunds", []),
        ("SELECT * FROM hr.orders", ["hr.orders"]),
        ("INSERT INTO audit_log SELECT * FROM orders", ["audit_log"]),
        ("SELECT 1; DELETE FROM customers_archive", ["customers_archive"]),
    ],
)
def test_the_table_allow_list(query: str, outside: list[str]) -> None:
    assert sorted(tables_outside(query, ALLOWED)) == sorted(outside)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT * FROM", "does not parse"),
        ("SELECT * FROM orders WHERE (id = 1", "does not parse"),
        ("selec * frm orders", "not a SELECT"),
        ("GRANT ALL ON orders TO mallory", "not a SELECT"),
        ("", "empty"),
    ],
)
def test_a_query_that_cannot_be_read_is_refused_with_the_fix(query: str, reason: str) -> None:
    with pytest.raises(QueryRefusedError, match=reason) as refused:
        tables_outside(query, ALLOWED)
    assert "send" in str(refused.value)
    assert "\x1b" not in str(refused.value)
