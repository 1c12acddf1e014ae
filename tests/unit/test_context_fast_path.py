"""parse_context (the validator's fast path) gives parse_canonical's verdicts, and reuses only proven bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from baton.context import NonCanonicalContextError, canonical_bytes, parse_canonical, parse_context
from tests.unit.test_context_hashing import contexts, json_values


def _verdict(check: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    try:
        return True, check(*args, **kwargs)
    except NonCanonicalContextError:
        return False, None


def _encodings(ctx: dict[str, Any]) -> list[bytes]:
    return [
        rfc8785.dumps(ctx),
        json.dumps(ctx, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(),
        json.dumps(ctx, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode(),
        json.dumps(ctx, ensure_ascii=False, separators=(",", ":")).encode(),
        json.dumps(ctx, ensure_ascii=False, sort_keys=True).encode(),
    ]


@settings(max_examples=400, deadline=None)
@given(contexts, contexts)
def test_parse_context_accepts_exactly_what_parse_canonical_accepts(
    ctx: dict[str, Any], parent: dict[str, Any]
) -> None:
    # The parent shares some of ctx's keys with the same values and some with others, as a checkpoint does.
    parent = {**parent, **{k: v for i, (k, v) in enumerate(ctx.items()) if i % 2 == 0}}
    known = parse_context(rfc8785.dumps(parent).decode())
    for raw in _encodings(ctx):
        text = raw.decode()
        strict, value = _verdict(parse_canonical, raw)
        for reuse in (None, known):
            fast, parsed = _verdict(parse_context, text, known=reuse)
            assert fast == strict, (raw, reuse is not None)
            if fast:
                assert parsed.value == value
                # Each span is the value's own encoding: the pairs rebuild the text exactly.
                pairs = [f"{json.dumps(k, ensure_ascii=False)}:{parsed.encoded(k)}" for k in parsed.value]
                assert "{" + ",".join(pairs) + "}" == text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":1}',
        b'{"":1,"":1}',
        b'{"b":1,"a":1}',
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b'{"a":-0}',
        b'{"a":1.0}',
        b'{"a":[1e+16]}',
        b'{"a":{"b":1e-05}}',
        b'{"a":"\\u00e9"}',
        b'{"\\u0061":1}',
        b'{"a":9007199254740993}',
        b'{"\xef\xbc\xa1":2,"\xf0\x9f\x98\x80":1}',
        b'{"a":"\\ud800"}',
        b'{"a": 1}',
        b'{"a":1} ',
        b"[1]",
        b'{"a":' + b"[" * 32 + b"]" * 32 + b"}",
        b'{"a":{"b":{"b":1,"a":2}}}',
    ],
)
def test_bytes_rfc8785_would_not_write_are_refused_by_the_fast_path(raw: bytes) -> None:
    with pytest.raises(NonCanonicalContextError):
        parse_canonical(raw)
    with pytest.raises(NonCanonicalContextError):
        parse_context(raw.decode("utf-8", errors="surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(contexts, st.text(max_size=8), json_values)
def test_a_value_changed_in_place_is_checked_again(ctx: dict[str, Any], key: str, value: Any) -> None:
    known = parse_context(rfc8785.dumps(ctx).decode())
    changed = dict(ctx, **{key: value})
    text = rfc8785.dumps(changed).decode()
    parsed = parse_context(text, known=known)
    assert parsed.value == parse_canonical(text.encode())
    assert set(parsed.fresh) == {
        k for k in changed if k not in ctx or canonical_bytes(ctx[k]) != canonical_bytes(changed[k])
    }
    # The same change written otherwise (Python's 1.0 for 1, a space, keys reordered) is refused though
    # every other value is byte for byte the parent's.
    pairs = [f"{rfc8785.dumps(k).decode()}:{rfc8785.dumps(v).decode()}" for k, v in changed.items()]
    sorted_pairs = [f"{rfc8785.dumps(k).decode()}:{parsed.encoded(k)}" for k in parsed.value]
    for bad in (
        json.dumps(changed, ensure_ascii=False, separators=(",", ":")),
        text[:-1] + " }",
        "{" + ",".join(reversed(sorted_pairs)) + "}",
        "{" + ",".join(pairs) + "}",
    ):
        if bad != text:
            with pytest.raises(NonCanonicalContextError):
                parse_context(bad, known=known)


def test_a_known_context_proven_under_a_looser_depth_limit_is_not_reused() -> None:
    deep: dict[str, Any] = {"a": [[[[1]]]], "b": 1}
    known = parse_context(rfc8785.dumps(deep).decode(), max_depth=8)
    with pytest.raises(NonCanonicalContextError, match="levels deep"):
        parse_context(rfc8785.dumps(dict(deep, b=2)).decode(), max_depth=4, known=known)
