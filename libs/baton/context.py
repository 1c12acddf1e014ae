"""Canonical context encoding (RFC 8785), hashing, parsing and snapshots (see docs/context-hashing.md)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

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


def canonical_bytes(value: JsonValue) -> bytes:
    """The RFC 8785 (JCS) encoding of a JSON value; raises NonCanonicalContextError naming the bad path."""
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


def parse_canonical(raw: bytes, *, max_depth: int = DEFAULT_MAX_CONTEXT_DEPTH) -> dict[str, JsonValue]:
    """Parse context bytes that must be exactly the RFC 8785 encoding of a JSON object.

    Raises NonCanonicalContextError for duplicate keys, NaN or Infinity, nesting deeper than max_depth,
    anything but an object, and bytes that are not the canonical encoding of what they parse to.
    """
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise NonCanonicalContextError(f"nesting deeper than the {max_depth}-level limit") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NonCanonicalContextError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise NonCanonicalContextError(f"a context is a JSON object, not a {type(value).__name__}")
    depth = depth_of(value)
    if depth > max_depth:
        raise NonCanonicalContextError(f"nesting is {depth} levels deep, over the {max_depth}-level limit")
    encoded = canonical_bytes(value)
    if encoded != raw:
        at = next(
            (i for i, (a, b) in enumerate(zip(encoded, raw, strict=False)) if a != b), min(len(encoded), len(raw))
        )
        raise NonCanonicalContextError(
            f"bytes are not the RFC 8785 encoding of their content (first difference at byte {at}): "
            "encode with baton.context.canonical_bytes or any RFC 8785 library"
        )
    return value


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
