"""Canonical context hashing: representation does not change the hash, content always does."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from baton.context import NonCanonicalContextError, canonical_bytes, context_sha256, make_snapshot, parse_canonical

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53 - 1), 2**53 - 1)  # RFC 8785 numbers are IEEE doubles: larger integers are refused
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
contexts = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


def _shuffled(value: Any) -> Any:
    """Same content, keys inserted in reverse order at every level."""
    if isinstance(value, dict):
        return {k: _shuffled(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_shuffled(v) for v in value]
    return value


@settings(max_examples=200)
@given(contexts)
def test_key_order_does_not_change_the_hash(ctx: dict[str, Any]) -> None:
    assert context_sha256(ctx) == context_sha256(_shuffled(ctx))


@settings(max_examples=200)
@given(contexts)
def test_hash_survives_a_json_round_trip_with_other_formatting(ctx: dict[str, Any]) -> None:
    reparsed = json.loads(json.dumps(ctx, indent=3, ensure_ascii=True))
    assert context_sha256(reparsed) == context_sha256(ctx)


@settings(max_examples=200)
@given(contexts, st.text(min_size=1, max_size=10), json_values)
def test_any_change_of_content_changes_the_hash(ctx: dict[str, Any], key: str, value: Any) -> None:
    changed = dict(ctx)
    sentinel = {"__changed__": [value, key]}
    changed[key] = sentinel
    assert context_sha256(changed) != context_sha256(ctx)


@settings(max_examples=100)
@given(contexts, st.text(min_size=1, max_size=10))
def test_removing_a_key_changes_the_hash(ctx: dict[str, Any], key: str) -> None:
    with_key = dict(ctx, **{key: "present"})
    without = {k: v for k, v in with_key.items() if k != key}
    assert context_sha256(with_key) != context_sha256(without)


@given(st.integers(-(2**52), 2**52))
def test_integral_floats_hash_like_integers(n: int) -> None:
    assert context_sha256({"n": float(n)}) == context_sha256({"n": n})


def test_numbers_that_differ_hash_differently() -> None:
    assert context_sha256({"n": 1}) != context_sha256({"n": 1.5})
    assert context_sha256({"n": True}) != context_sha256({"n": 1})
    assert context_sha256({"n": 0.1 + 0.2}) != context_sha256({"n": 0.3})


def test_unicode_normalization_forms_are_different_content() -> None:
    # RFC 8785 keeps strings as they are (Baton no longer normalises to NFC): other bytes, another hash.
    composed = "Zo\u00eb"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert context_sha256({decomposed: decomposed}) != context_sha256({composed: composed})
    assert context_sha256({"name": "Zoe"}) != context_sha256({"name": composed})


def test_nesting_is_part_of_the_content() -> None:
    assert context_sha256({"a": {"b": 1}}) != context_sha256({"a": [{"b": 1}]})
    assert context_sha256({"a": {"b": 1}}) != context_sha256({"a.b": 1})


def test_known_vector_is_stable_across_machines() -> None:
    # Pinned so that an accidental change of the encoding is caught; documented in docs/context-hashing.md.
    ctx = {"b": [1, 2.5, "x"], "a": {"\u00e9": None, "t": True}}
    assert canonical_bytes(ctx) == '{"a":{"t":true,"é":null},"b":[1,2.5,"x"]}'.encode()
    assert context_sha256(ctx) == "55230023831c5d194bbbb8c077c85a5be3aaacefa638f41669edcafdb3d15011"


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": float("inf")}, {1: "int key"}, {"x": {1, 2}}])
def test_values_without_a_json_encoding_are_refused_with_the_path(bad: dict[Any, Any]) -> None:
    with pytest.raises(NonCanonicalContextError, match=r"\$"):
        canonical_bytes(bad)


def test_snapshot_carries_hash_size_version_and_parent() -> None:
    first = make_snapshot({"customer": "c-1"}, version=1)
    second = make_snapshot({"customer": "c-1", "verified": True}, version=2, parent=first)
    assert first.size_bytes == len(first.context_json.encode())
    assert first.parent_sha256 is None
    assert second.parent_sha256 == first.sha256
    assert second.sha256 == context_sha256(json.loads(second.context_json))


@settings(max_examples=300)
@given(contexts)
def test_the_canonical_check_agrees_with_rfc8785_on_any_bytes(ctx: dict[str, Any]) -> None:
    # parse_canonical decides most contexts with Python's C encoder: it must accept exactly RFC 8785's bytes.
    jcs = rfc8785.dumps(ctx)
    assert canonical_bytes(parse_canonical(jcs)) == jcs
    for other in (
        json.dumps(ctx, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(),
        json.dumps(ctx, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode(),
        json.dumps(ctx, ensure_ascii=False, separators=(",", ":")).encode(),
    ):
        try:
            parse_canonical(other)
            accepted = True
        except NonCanonicalContextError:
            accepted = False
        assert accepted == (other == jcs), other


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":1}',
        b'{"a":NaN}',
        b'{"a":1E400}',
        b'{"a":-0}',
        b'{"a":1.0}',
        b'{"a":5.0}',
        b'{"a":1.50}',
        b'{"a":1e-05}',
        b'{"a":1e+16}',
        b'{"a":0.0}',
        b'{"a":"\\u00e9"}',
        b'{"a":"\\/"}',
        b'{"a":9007199254740993}',  # no double is this integer
        b'{"\xef\xbc\xa1":2,"\xf0\x9f\x98\x80":1}',  # code-point order, not RFC 8785's UTF-16 order
        b'{"a":"\\ud800"}',
        b'{"a":' + b"[" * 33 + b"]" * 33 + b"}",
    ],
)
def test_bytes_rfc8785_would_not_write_are_refused(raw: bytes) -> None:
    with pytest.raises(NonCanonicalContextError):
        parse_canonical(raw)


@pytest.mark.parametrize("number", [0.75, 12.5, 1e-4, 123456.789, 1e-7, 1e21, 2.0**60, -0.1, 9007199254740992.0])
def test_floats_rfc8785_writes_are_accepted(number: float) -> None:
    raw = rfc8785.dumps({"x": number})
    assert canonical_bytes(parse_canonical(raw)) == raw


def test_characters_beyond_the_bmp_sort_by_utf16_code_units() -> None:
    raw = rfc8785.dumps({"\U0001f600": 1, "\uff21": 2})
    assert raw.index("\U0001f600".encode()) < raw.index("\uff21".encode())
    assert parse_canonical(raw) == {"\U0001f600": 1, "\uff21": 2}


@settings(max_examples=500)
@given(contexts)
def test_the_fast_encoder_writes_exactly_rfc8785s_bytes(ctx: dict[str, Any]) -> None:
    # canonical_bytes writes with Python's C encoder when it can prove the bytes are the same.
    assert canonical_bytes(ctx) == rfc8785.dumps(ctx)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.0, "b": 1e21, "c": 1e-7, "d": 0.5, "e": -0.0, "f": 123456789012345.6},
        {"\U0001f600": 1, "\uffff": 2, "z": 3},  # UTF-16 order puts the emoji before U+FFFF
        {"k": ["\u2028\u2029", "\x00\x1f\x7f", 'q"\\']},
        {"n": 2**53 - 1, "m": -(2**53 - 1)},
    ],
)
def test_the_fast_encoder_hands_what_differs_to_rfc8785(value: dict[str, Any]) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)
