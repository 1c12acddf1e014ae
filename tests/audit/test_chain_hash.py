"""The auditor's cheap hash path (Python's JSON when it is provably the canonical encoding) never
changes a record's hash: it equals record_hash, and the stored bytes are record_body."""

from __future__ import annotations

from typing import Any

import pytest

from baton.audit.chain import (
    AuditChain,
    Record,
    _plain_json,
    _plain_scalars,
    _spliced_body,
    record_body,
    record_hash,
    stored_body,
)
from baton.context import canonical_bytes


def _content(workflow_id: str, payload: Any, signer: str = "supervisor") -> Record:
    return {
        "topic": "baton.tasks",
        "partition": 0,
        "offset": 0,
        "raw_sha256": "ab" * 32,
        "event_id": f"e-{workflow_id}",
        "event_type": "TaskRequested",
        "schema_version": 2,
        "workflow_id": workflow_id,
        "tenant_id": "t1",
        "producer": "client",
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "causation_id": None,
        "payload": payload,
        "signer": signer,
    }


@pytest.mark.parametrize(
    "payload",
    [
        {"a": 1, "b": [True, None, "x"]},
        {"é": "ü", "nested": {"z": 1, "a": {"payload": 1, "producer": 2}}},
        {"f": 1.5, "g": 1e21, "h": -0.0},
        {"line": "a\u2028b\x1f\x7f", "emoji": "\U0001f600", "\U0001f600": 1, "\uffff": 2},
    ],
    ids=["ascii", "non-ascii-and-nested-marks", "floats", "escapes-and-astral-keys"],
)
@pytest.mark.parametrize("workflow_id", ["wf-1", "wf-é", "wf-\U0001f600"])
def test_the_spliced_hash_is_the_canonical_hash(payload: Any, workflow_id: str) -> None:
    content = _content(workflow_id, payload)
    encoded_payload = canonical_bytes(payload)
    fast, slow = AuditChain(), AuditChain()
    for offset in range(3):  # linked records carry the previous hashes: every chain field is covered
        c = content | {"offset": offset, "event_id": f"e-{offset}"}
        a = fast.link(c, duplicate_of=None, payload=encoded_payload)
        b = slow.link(c, duplicate_of=None)
        assert a["hash"] == b["hash"] == record_hash(a)
        assert stored_body(a) == record_body(a)


@pytest.mark.parametrize(
    "fields",
    [
        {"a": 1, "z": "x"},
        {"a": 'quote " and ,"z": inside', "z": None},
        {"z": 1},
        {"a": 1},
        {},
    ],
    ids=["both-sides", "key-pattern-inside-a-string", "only-after", "only-before", "payload-alone"],
)
def test_the_payload_is_spliced_where_the_canonical_encoding_puts_it(fields: Record) -> None:
    payload = {"k": [1, {"z": 2, "a": "b"}], "payload": {"producer": 1}}
    record = fields | {"payload": payload}
    scalars = _plain_scalars(record)
    assert scalars is not None
    assert _spliced_body(scalars, canonical_bytes(payload)) == canonical_bytes(record)


@pytest.mark.parametrize(
    "value", ["é", 2**53, 10**16, 1.5, [1], {"a": 1}], ids=["non-ascii", "2^53", "10^16", "float", "list", "object"]
)
def test_a_field_python_may_not_write_canonically_takes_the_canonical_path(value: Any) -> None:
    assert _plain_scalars({"a": value, "payload": {}}) is None


def test_a_record_whose_plain_json_is_not_canonical_is_stored_as_its_canonical_bytes() -> None:
    record = _content("wf-1", {"\U0001f600": 1, "\uffff": 2})  # UTF-16 order differs from code point order
    assert canonical_bytes(record) != _plain_json(record)
    record["hash"] = record_hash(record)
    assert stored_body(record) == record_body(record)
