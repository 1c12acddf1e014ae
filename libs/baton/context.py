"""Canonical context encoding, hashing and snapshots (see docs/context-hashing.md)."""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Any

from baton.contracts.models import ContextDiff, ContextSnapshot

JsonValue = Any

_MAX_SAFE_INT = 2**53


class NonCanonicalContextError(ValueError):
    """The context holds a value that has no canonical JSON encoding."""


def _canonical(value: JsonValue, path: str) -> JsonValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NonCanonicalContextError(
                f"context value at {path} is {value!r}; NaN and Infinity have no JSON encoding: "
                "store them as strings or null"
            )
        # 1.0 and 1 are the same JSON number; integral floats within the exact range become ints.
        if value.is_integer() and abs(value) < _MAX_SAFE_INT:
            return int(value)
        return value
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NonCanonicalContextError(
                    f"context key {key!r} at {path} is a {type(key).__name__}; JSON object keys must be strings"
                )
            nkey = unicodedata.normalize("NFC", key)
            if nkey in out:
                raise NonCanonicalContextError(
                    f"context keys at {path} collide after Unicode NFC normalization: {key!r}"
                )
            out[nkey] = _canonical(item, f"{path}.{nkey}")
        return out
    if isinstance(value, list | tuple):
        return [_canonical(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise NonCanonicalContextError(
        f"context value at {path} is a {type(value).__name__}; only JSON types "
        "(object, array, string, number, boolean, null) can be hashed"
    )


def canonical_bytes(context: JsonValue) -> bytes:
    """Encode a JSON value canonically: NFC strings, sorted keys, no whitespace, UTF-8."""
    normalized = _canonical(context, "$")
    return json.dumps(normalized, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def context_sha256(context: JsonValue) -> str:
    """Lower-case hex SHA-256 of the canonical encoding of a context."""
    return hashlib.sha256(canonical_bytes(context)).hexdigest()


def make_snapshot(
    context: Mapping[str, JsonValue], *, version: int, parent: ContextSnapshot | None = None
) -> ContextSnapshot:
    """Build a snapshot whose hash and size are computed from the context itself."""
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
