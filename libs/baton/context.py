"""Canonical context encoding (RFC 8785), hashing, parsing and snapshots (see docs/context-hashing.md)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any, cast

import rfc8785

from baton.contracts.models import ContextDiff, ContextSnapshot

JsonValue = Any

# Deepest nesting of objects and arrays a context may have (the top-level object is depth 1).
DEFAULT_MAX_CONTEXT_DEPTH = 32
_MAX_SAFE_INT = 2**53 - 1


class NonCanonicalContextError(ValueError):
    """The context holds a value that has no RFC 8785 encoding, or its bytes are not that encoding."""


def _locate(value: JsonValue, path: str) -> str:
    """Where a value without an RFC 8785 encoding is, and why (only walked once encoding failed)."""
    if value is None or isinstance(value, bool | str):
        return ""
    if isinstance(value, int):
        return "" if abs(value) <= _MAX_SAFE_INT else f"{path} is {value}, outside ±(2^53-1): store it as a string"
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"{path} is {value!r}; NaN and Infinity have no JSON encoding"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"key {key!r} at {path} is a {type(key).__name__}; JSON object keys must be strings"
            found = _locate(item, f"{path}.{key}")
            if found:
                return found
        return ""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _locate(item, f"{path}[{i}]")
            if found:
                return found
        return ""
    return f"{path} is a {type(value).__name__}; only JSON types (object, array, string, number, boolean, null)"


def _json_writes_it_canonically(value: JsonValue) -> bool:
    """Whether Python's json (sorted keys, compact, UTF-8) writes exactly RFC 8785's bytes for value.

    It does when every number is an integer within ±(2^53-1) or a non-integral float in [1e-4, 1e16)
    (the same shortest form in both), every key is a string without characters beyond U+FFFF (the only
    place UTF-16 and code-point order differ), and the values are JSON types: what most contexts are.
    """
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str) or node is None or isinstance(node, bool):
            continue
        if isinstance(node, int):
            if abs(node) > _MAX_SAFE_INT:
                return False
        elif isinstance(node, float):
            if node.is_integer() or not 1e-4 <= abs(node) < 1e16:
                return False
        elif isinstance(node, dict):
            for key in node:
                if not isinstance(key, str) or (not key.isascii() and max(key) > "\uffff"):
                    return False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        else:
            return False
    return True


def canonical_bytes(value: JsonValue) -> bytes:
    """The RFC 8785 (JCS) encoding of a JSON value; raises NonCanonicalContextError naming the bad path.

    Written by Python's json (C speed) when that is provably the same bytes, by the rfc8785 package
    otherwise; a property test holds the two equal.
    """
    if _json_writes_it_canonically(value):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode(
                "utf-8"
            )
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 explains it
    try:
        return rfc8785.dumps(value)
    except (TypeError, ValueError) as exc:  # CanonicalizationError, or a lone surrogate
        where = _locate(value, "$") or f"$: {exc}"
        raise NonCanonicalContextError(f"no RFC 8785 encoding: {where}") from exc


def context_sha256(context: JsonValue) -> str:
    """Lower-case hex SHA-256 of the RFC 8785 encoding of a context."""
    return hashlib.sha256(canonical_bytes(context)).hexdigest()


def depth_of(value: JsonValue) -> int:
    """Nesting depth of objects and arrays (a scalar is 0, {} is 1)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise NonCanonicalContextError(f"duplicate object key {key!r}: a JSON object names each key once")
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise NonCanonicalContextError(f"{name} is not JSON (NaN and Infinity have no JSON encoding)")


_ASTRAL = re.compile(rb"[\xf0-\xf4]")  # lead bytes of UTF-8 characters beyond U+FFFF


def _is_canonical(value: JsonValue, raw: bytes, *, has_float: bool) -> bool:
    """Whether raw is the RFC 8785 encoding of value (parsed from raw).

    Without characters beyond U+FFFF and floats other than non-integral ones in [1e-4, 1e16), RFC 8785
    and Python's json (sorted keys, compact, UTF-8) write the same bytes: integers in decimal, such
    floats in the same shortest fixed-point form, the same string escapes, the same key order (UTF-16
    and code-point order differ only beyond U+FFFF). That C-speed comparison decides most contexts; the
    rfc8785 package decides the rest.
    """
    if not has_float and not _ASTRAL.search(raw):
        try:
            dumped = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
            return dumped.encode("utf-8") == raw
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 explains it
    return canonical_bytes(value) == raw


def parse_canonical(raw: bytes, *, max_depth: int = DEFAULT_MAX_CONTEXT_DEPTH) -> dict[str, JsonValue]:
    """Parse context bytes that must be exactly the RFC 8785 encoding of a JSON object.

    Raises NonCanonicalContextError for duplicate keys, NaN or Infinity, integers beyond ±(2^53-1),
    nesting deeper than max_depth, anything but an object, and bytes that are not the canonical encoding
    of what they parse to.
    """
    floats: list[str] = []

    def parse_float(text: str) -> float:
        number = float(text)
        # Python's repr and ECMAScript write a non-integral double in [1e-4, 1e16) alike (fixed-point,
        # shortest round trip); any other float goes to rfc8785.
        if number.is_integer() or not 1e-4 <= abs(number) < 1e16:
            floats.append(text)
        return number

    def parse_int(text: str) -> int | float:
        number = int(text)
        if len(text) > 15 and abs(number) > _MAX_SAFE_INT:
            return parse_float(text)  # an RFC 8785 number is a double: canonical only if it is one exactly
        return number

    try:
        value = json.loads(
            raw,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=parse_float,
            parse_int=parse_int,
        )
    except RecursionError:
        raise NonCanonicalContextError(f"nesting deeper than the {max_depth}-level limit") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NonCanonicalContextError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise NonCanonicalContextError(f"a context is a JSON object, not a {type(value).__name__}")
    # Fewer brackets than the limit cannot nest deeper than it; only then is the tree walked.
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        depth = depth_of(value)
        if depth > max_depth:
            raise NonCanonicalContextError(f"nesting is {depth} levels deep, over the {max_depth}-level limit")
    if not _is_canonical(value, raw, has_float=bool(floats)):
        encoded = canonical_bytes(value)
        at = next(
            (i for i, (a, b) in enumerate(zip(encoded, raw, strict=False)) if a != b), min(len(encoded), len(raw))
        )
        raise NonCanonicalContextError(
            f"bytes are not the RFC 8785 encoding of their content (first difference at byte {at}): "
            "encode with baton.context.canonical_bytes or any RFC 8785 library"
        )
    return value


@dataclass(frozen=True)
class ParsedContext:
    """A context parsed from text proven to be its RFC 8785 encoding, with each top-level value's place in it.

    Only parse_context makes one, so text is always canonical: a top-level value's slice of it is that
    value's own RFC 8785 encoding, and two such slices are equal exactly when the values are.
    """

    text: str
    value: dict[str, JsonValue]
    spans: dict[str, tuple[int, int]]
    max_depth: int
    # Top-level keys whose encoding is not byte for byte the known context's (all keys when none was known).
    fresh: tuple[str, ...]

    def encoded(self, key: str) -> str:
        """The RFC 8785 encoding of one top-level value (a slice of the canonical text, nothing re-encoded)."""
        start, end = self.spans[key]
        return self.text[start:end]


class _Undecided(ValueError):
    """The fast path cannot prove the text canonical (nor refute it with a reason): the strict path decides."""


# The C scanner json.loads itself runs: one JSON value at an index -> (value, end index); and its string reader.
_scan_value = make_scanner(cast(Any, json.JSONDecoder()))
_scan_string: Callable[[str, int, bool], tuple[str, int]] = vars(json.decoder)["scanstring"]
_PLAIN_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
# Where a number Python's json writes may differ from RFC 8785's: an integral float ("1.0"), an exponent
# ("1e-05", "1e+16": Python switches to exponents at other magnitudes than ECMAScript), 16+ digits (an
# integer possibly beyond 2^53). A match inside a string only sends the value to the exact check.
_NUMBER_HAZARD = re.compile(r"[0-9](?:\.0(?![0-9])|e[-+]|[0-9]{15})")


def _python_writes_rfc8785(written: str) -> bool:
    """Whether text Python's json wrote (sorted, compact, UTF-8) is provably also RFC 8785's encoding."""
    if not written.isascii() and max(written) > "\uffff":
        return False  # UTF-16 and code-point key order differ beyond U+FFFF
    return _NUMBER_HAZARD.search(written) is None


def _scan_top(
    text: str, known: ParsedContext | None
) -> tuple[dict[str, JsonValue], dict[str, tuple[int, int]], list[str]]:
    """Split canonical object text into its top-level values and their spans, in one pass of the C scanner;
    also returns the keys whose value text is not byte for byte known's (those values are taken from
    known without being parsed again).

    Raises _Undecided at anything a canonical encoding would not hold (whitespace, an escaped or
    non-BMP key, keys out of order or repeated, not an object) and leaves the reason to the strict path.
    """
    if text == "{}":
        return {}, {}, []
    if not text.startswith('{"'):
        raise _Undecided
    value: dict[str, JsonValue] = {}
    spans: dict[str, tuple[int, int]] = {}
    fresh: list[str] = []
    known_spans = known.spans if known is not None else {}
    previous = ""
    last = len(text) - 1
    escapes = "\\" in text
    plain = text.isascii()
    i = 1
    try:
        while True:
            if text[i] != '"':
                raise _Undecided
            key, end = _scan_string(text, i + 1, True)
            if (value and key <= previous) or text[end] != ":":
                raise _Undecided
            if escapes and text.find("\\", i, end) != -1:
                raise _Undecided  # an escaped key: the strict path checks its escapes
            if not plain and not key.isascii() and max(key) > "\uffff":
                raise _Undecided  # UTF-16 order differs from code-point order beyond U+FFFF
            span = known_spans.get(key)
            stop = -1
            if span is not None and known is not None:
                # The known value's text, then a separator: that is the whole value, already proven.
                theirs = known.text[span[0] : span[1]]
                if text.startswith(theirs, end + 1) and text[end + 1 + len(theirs)] in ",}":
                    stop = end + 1 + len(theirs)
                    value[key] = known.value[key]
            if stop < 0:
                value[key], stop = _scan_value(text, end + 1)
                fresh.append(key)
            spans[key] = (end + 1, stop)
            previous = key
            if text[stop] == ",":
                i = stop + 1
            elif stop == last and text[stop] == "}":
                return value, spans, fresh
            else:
                raise _Undecided
    except (ValueError, IndexError, StopIteration, RecursionError):  # JSONDecodeError and _Undecided are ValueErrors
        raise _Undecided from None


def _strictly(text: str, raw: bytes, max_depth: int, known: ParsedContext | None) -> ParsedContext:
    """The exact check (parse_canonical) for what the fast path could not decide; raises with the reason."""
    value = parse_canonical(raw, max_depth=max_depth)
    # Canonical now: "{", then "key":value pairs joined by ",", then "}"; the scanner finds each span.
    spans: dict[str, tuple[int, int]] = {}
    at = 1
    for key in value:
        _key, colon = _scan_string(text, at + 1, True)
        _item, end = _scan_value(text, colon + 1)
        spans[key] = (colon + 1, end)
        at = end + 1
    fresh = tuple(k for k in value if known is None or _differs(known, k, text, spans[k]))
    return ParsedContext(text, value, spans, max_depth, fresh)


def _differs(known: ParsedContext, key: str, text: str, span: tuple[int, int]) -> bool:
    """Whether a top-level value's encoding (text[span]) is not byte for byte known's under the same key."""
    theirs = known.spans.get(key)
    return (
        theirs is None
        or theirs[1] - theirs[0] != span[1] - span[0]
        or known.text[theirs[0] : theirs[1]] != text[span[0] : span[1]]
    )


def parse_context(
    text: str,
    *,
    raw: bytes | None = None,
    max_depth: int = DEFAULT_MAX_CONTEXT_DEPTH,
    known: ParsedContext | None = None,
) -> ParsedContext:
    """Parse context text that must be exactly the RFC 8785 encoding of a JSON object, once, with spans.

    Same verdicts as parse_canonical (raw: the text's UTF-8 bytes, when the caller has them). A top-level
    value whose encoding equals known's (a context already proven canonical, such as the parent
    checkpoint) is not re-encoded: only what differs is canonicalised, by Python's C encoder where
    that provably writes RFC 8785's bytes; anything else goes to parse_canonical, which gives the reason.
    """
    if raw is None:
        raw = text.encode("utf-8", errors="surrogatepass")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _strictly(text, raw, max_depth, known)  # a lone surrogate: no RFC 8785 encoding
    if known is not None and known.max_depth > max_depth:
        known = None  # proven under a looser depth limit: nothing of it is reused
    try:
        value, spans, fresh = _scan_top(text, known)
    except _Undecided:
        return _strictly(text, raw, max_depth, known)
    # Fewer brackets than the limit cannot nest deeper than it; only then is a value walked.
    deep = text.count("{") + text.count("[") > max_depth
    pieces: list[str] = []
    for key in fresh:
        start, end = spans[key]
        segment = text[start:end]
        pieces.append(f'"{key}":{segment}')  # the scan let through only keys written without escapes
        if deep and segment.count("{") + segment.count("[") >= max_depth:
            depth = 1 + depth_of(value[key])
            if depth > max_depth:
                raise NonCanonicalContextError(f"nesting is {depth} levels deep, over the {max_depth}-level limit")
    if fresh:
        # What is left, as one object, must be exactly what Python's C encoder writes for it, with nothing
        # it could write unlike RFC 8785; anything else goes to parse_canonical, which says why.
        whole = len(fresh) == len(spans)
        written = text if whole else "{" + ",".join(pieces) + "}"
        if not _python_writes_rfc8785(written):
            return _strictly(text, raw, max_depth, known)
        try:
            if _PLAIN_ENCODER.encode(value if whole else {k: value[k] for k in fresh}) != written:
                return _strictly(text, raw, max_depth, known)
        except ValueError:
            return _strictly(text, raw, max_depth, known)  # NaN or Infinity
    return ParsedContext(text, value, spans, max_depth, tuple(fresh))


def make_snapshot(
    context: Mapping[str, JsonValue],
    *,
    version: int,
    parent: ContextSnapshot | None = None,
    max_depth: int = DEFAULT_MAX_CONTEXT_DEPTH,
) -> ContextSnapshot:
    """Build a snapshot whose hash and size are computed from the context itself."""
    depth = depth_of(dict(context))
    if depth > max_depth:
        raise NonCanonicalContextError(f"context nesting is {depth} levels deep, over the {max_depth}-level limit")
    encoded = canonical_bytes(context)
    return ContextSnapshot(
        context_json=encoded.decode("utf-8"),
        sha256=hashlib.sha256(encoded).hexdigest(),
        size_bytes=len(encoded),
        version=version,
        parent_sha256=parent.sha256 if parent is not None else None,
    )


def load_context(snapshot: ContextSnapshot) -> dict[str, JsonValue]:
    """Parse a snapshot's context; raises ValueError when it is not a JSON object."""
    value = json.loads(snapshot.context_json)
    if not isinstance(value, dict):
        raise ValueError(f"context of snapshot v{snapshot.version} is a {type(value).__name__}, not an object")
    return value


def diff_contexts(before: Mapping[str, JsonValue], after: Mapping[str, JsonValue]) -> ContextDiff:
    """Top-level keys added, removed and changed between two contexts."""
    added = sorted(k for k in after if k not in before)
    removed = sorted(k for k in before if k not in after)
    changed = sorted(k for k in after if k in before and canonical_bytes(after[k]) != canonical_bytes(before[k]))
    return ContextDiff(added=added, removed=removed, changed=changed)
