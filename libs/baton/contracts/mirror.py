"""Checks that every typed model mirrors the newest version of its Avro schema, field by field.

The schemas under schemas/ are the source of truth; the pydantic models in
baton.contracts.models are written by hand for readable, typed code. This check
keeps the two identical: same record name and version, same fields in the same
order, each Avro type mapped to the one Python annotation it decodes into, the
same optionality and the same defaults.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from pydantic import BaseModel

from baton.contracts.catalogue import Catalogue, Schema, SchemaCatalogueError, default_catalogue, subject_of
from baton.contracts.models import RECORD_MODELS, Record

# Fields the schema requires but the model lets a producer omit, and why that is safe: the value is
# always written on the wire (Avro has no "absent"), the default only spares the code building an event.
PRODUCER_SIDE_DEFAULTS: Mapping[tuple[str, str], str] = {
    ("Envelope", "event_id"): "a new event gets a fresh UUID4 when it is built; decoding always reads the written id",
    ("Envelope", "occurred_at"): "a new event is stamped with the producer's clock when it is built",
    ("Envelope", "event_type"): "AvroSerde.encode overwrites it with the model's event_type",
    ("Envelope", "schema_version"): "AvroSerde.encode overwrites it with the version of the schema it writes",
    ("Envelope", "step_seq"): "0 is a workflow's first step; an event built outside a step (a task) starts there",
    ("Envelope", "correlation_id"): (
        "EventBus.envelope always sets it (to the workflow id or the cause's); only envelopes built by hand "
        "(tests, chaos and soak tools) leave it empty"
    ),
}

_PRIMITIVES: Mapping[str, type[Any] | None] = {
    "null": None,
    "string": str,
    "int": int,
    "long": int,
    "boolean": bool,
    "float": float,
    "double": float,
    "bytes": bytes,
}
_NAMED_KINDS = ("record", "error", "enum", "fixed")


@dataclass(frozen=True)
class _PyType:
    """A Python annotation in a normal form both sides can be compared in."""

    kind: str  # a primitive's name, "optional", "list", "dict", "enum", "model" or "unsupported"
    name: str = ""
    args: tuple[_PyType, ...] = ()
    symbols: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "optional":
            return f"{self.args[0]} | None"
        if self.kind == "list":
            return f"list[{self.args[0]}]"
        if self.kind == "dict":
            return f"dict[str, {self.args[0]}]"
        if self.kind == "enum":
            return f"StrEnum {self.name}({', '.join(self.symbols)})"
        if self.kind == "model":
            return f"the model of {self.name}"
        if self.kind == "unsupported":
            return self.name
        return self.kind


def _primitive(py: type[Any] | None) -> _PyType:
    return _PyType("None" if py is None else py.__name__)


def _found(annotation: Any) -> _PyType:
    """Normal form of a model field's annotation."""
    if annotation is None or annotation is type(None):
        return _PyType("None")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _PyType("optional", args=(_found(rest[0]),))
        return _PyType("unsupported", name=f"union {annotation}")
    if origin is list and len(args) == 1:
        return _PyType("list", args=(_found(args[0]),))
    if origin is dict and len(args) == 2:
        if args[0] is not str:
            return _PyType("unsupported", name=f"dict keyed by {args[0]!r} (Avro map keys are strings)")
        return _PyType("dict", args=(_found(args[1]),))
    if isinstance(annotation, type):
        if issubclass(annotation, StrEnum):
            return _PyType("enum", name=annotation.__name__, symbols=tuple(m.value for m in annotation))
        if issubclass(annotation, Enum):
            return _PyType("unsupported", name=f"Enum {annotation.__name__} (not a StrEnum)")
        if issubclass(annotation, Record):
            return _PyType("model", name=annotation.avro_name)
        if annotation in (str, int, bool, float, bytes, datetime):
            return _PyType(annotation.__name__)
    return _PyType("unsupported", name=repr(annotation))


def _strip_optional(t: _PyType) -> tuple[_PyType, bool]:
    return (t.args[0], True) if t.kind == "optional" else (t, False)


class _SchemaWalker:
    """Maps the Avro types of one inlined schema to Python normal forms."""

    def __init__(self, schema: Schema) -> None:
        self.named: dict[str, Schema] = {}
        self._learn(schema, "")

    def _learn(self, schema: Any, ns: str) -> None:
        """Remember every named type defined anywhere in the schema (each is defined once, where first used)."""
        if isinstance(schema, list):
            for branch in schema:
                self._learn(branch, ns)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in _NAMED_KINDS:
                name = str(schema["name"])
                full = name if "." in name else f"{schema.get('namespace', ns)}.{name}"
                self.named[full] = schema
                for f in schema.get("fields", []):
                    self._learn(f["type"], full.rpartition(".")[0])
            elif kind == "array":
                self._learn(schema["items"], ns)
            elif kind == "map":
                self._learn(schema["values"], ns)
            elif isinstance(kind, (list, dict)):
                self._learn(kind, ns)

    def resolve(self, schema: Any, ns: str) -> tuple[Any, str]:
        """The definition behind a reference or a {"type": ...} wrapper, with its namespace."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            full = schema if "." in schema else f"{ns}.{schema}"
            if full in self.named:
                return self.named[full], full.rpartition(".")[0]
            return schema, ns
        if isinstance(schema, dict):
            kind = schema.get("type")
            if kind in _NAMED_KINDS:
                name = str(schema["name"])
                full = name if "." in name else f"{schema.get('namespace', ns)}.{name}"
                return schema, full.rpartition(".")[0]
            if "logicalType" not in schema and isinstance(kind, (str, list, dict)) and kind not in ("array", "map"):
                return self.resolve(kind, ns)
        return schema, ns

    def expected(self, schema: Any, ns: str) -> _PyType:
        """Normal form of the Python annotation an Avro type decodes into."""
        schema, ns = self.resolve(schema, ns)
        if isinstance(schema, list):
            rest = [b for b in schema if b != "null"]
            if len(rest) == 1 and len(schema) == 2:
                return _PyType("optional", args=(self.expected(rest[0], ns),))
            return _PyType("unsupported", name=f"the union {json.dumps(schema)} (only [null, T] is mapped)")
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _primitive(_PRIMITIVES[schema])
            return _PyType("unsupported", name=f"the unknown named type {schema!r}")
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical == "timestamp-millis" and kind == "long":
            return _PyType("datetime")
        if logical is not None:
            return _PyType("unsupported", name=f"the logical type {logical!r} on {kind!r} (not mapped yet)")
        if kind in ("record", "error"):
            name = str(schema["name"])
            return _PyType("model", name=name if "." in name else f"{ns}.{name}")
        if kind == "enum":
            return _PyType("enum", name=str(schema["name"]), symbols=tuple(schema["symbols"]))
        if kind == "array":
            return _PyType("list", args=(self.expected(schema["items"], ns),))
        if kind == "map":
            return _PyType("dict", args=(self.expected(schema["values"], ns),))
        return _PyType("unsupported", name=f"the Avro type {kind!r} (not mapped yet)")

    def default(self, schema: Any, value: Any, ns: str) -> Any:
        """The Python value an Avro field default decodes into."""
        schema, ns = self.resolve(schema, ns)
        if isinstance(schema, list):  # a union's default belongs to its first branch
            return self.default(schema[0], value, ns)
        kind = schema if isinstance(schema, str) else schema.get("type")
        if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
            return datetime.fromtimestamp(value / 1000, UTC)
        if kind in ("bytes", "fixed"):
            return str(value).encode("latin-1")  # Avro writes bytes defaults as code points 0-255
        if kind in ("float", "double"):
            return float(value)
        if kind == "array":
            return [self.default(schema["items"], v, ns) for v in value]
        if kind == "map":
            return {k: self.default(schema["values"], v, ns) for k, v in value.items()}
        if kind in ("record", "error"):
            return {
                f["name"]: self.default(f["type"], value[f["name"]], ns) for f in schema["fields"] if f["name"] in value
            }
        return value


def _same_default(expected: Any, found: Any) -> bool:
    if isinstance(found, BaseModel):
        found = found.model_dump()
    # bool is an int in Python, but True is not a default for an int field
    return bool(expected == found) and isinstance(expected, bool) == isinstance(found, bool)


def _type_problem(where: str, avro: Any, expected: _PyType, found: _PyType) -> str:
    exp_inner, exp_optional = _strip_optional(expected)
    found_inner, found_optional = _strip_optional(found)
    avro_text = json.dumps(avro)
    if exp_optional != found_optional and exp_inner == found_inner:
        if exp_optional:
            why = f"the schema type {avro_text} is a union with null, so the annotation must be Optional"
        else:
            why = f"the schema type {avro_text} has no null branch, so the annotation must not be Optional"
        return f"{where}: optionality differs: {why}: expected {expected}, found {found}"
    if exp_inner.kind == found_inner.kind == "enum" and exp_inner.name == found_inner.name:
        missing = [s for s in exp_inner.symbols if s not in found_inner.symbols]
        extra = [s for s in found_inner.symbols if s not in exp_inner.symbols]
        detail = "; ".join(
            part
            for part in (
                f"missing {missing}" if missing else "",
                f"not in the schema {extra}" if extra else "",
                "same symbols in another order" if not missing and not extra else "",
            )
            if part
        )
        return f"{where}: enum symbols differ ({detail}): expected {expected}, found {found}"
    return f"{where}: type differs: the schema type {avro_text} maps to {expected}, found {found}"


def _check_model(
    model: type[Record],
    catalogue: Catalogue,
    producer_defaults: Mapping[tuple[str, str], str],
) -> list[str]:
    name = model.__name__
    try:
        latest = catalogue.latest(subject_of(model.avro_name))
    except SchemaCatalogueError as exc:
        return [f"{name}: its avro_name {model.avro_name!r} names no schema: {exc}"]
    problems: list[str] = []
    if model.avro_name != latest.full_name:
        problems.append(
            f"{name}: version differs: expected avro_name {latest.full_name!r} (the newest schema, "
            f"{latest.path.name}), found {model.avro_name!r}; update the model to the newest version"
        )
    schema = latest.inlined
    if schema.get("type") not in ("record", "error"):
        return [*problems, f"{name}: {latest.path.name} is a {schema.get('type')!r}, not a record"]
    if schema["name"] != name:
        problems.append(f"{name}: record name differs: expected {schema['name']!r}, found {name!r}")

    avro_fields: list[dict[str, Any]] = list(schema["fields"])
    avro_names = [str(f["name"]) for f in avro_fields]
    model_names = list(model.model_fields)
    for missing in (n for n in avro_names if n not in model_names):
        problems.append(f"{name}.{missing}: field missing from the model ({latest.path.name} has it)")
    for extra in (n for n in model_names if n not in avro_names):
        problems.append(f"{name}.{extra}: field not in the schema ({latest.path.name} lacks it)")
    common = [n for n in avro_names if n in model_names]
    if common != [n for n in model_names if n in avro_names]:
        problems.append(
            f"{name}: field order differs: expected {common}, found {[n for n in model_names if n in avro_names]}"
        )

    walker = _SchemaWalker(schema)
    ns = latest.full_name.rpartition(".")[0]
    for f in avro_fields:
        fname = str(f["name"])
        info = model.model_fields.get(fname)
        if info is None:
            continue
        where = f"{name}.{fname}"
        expected = walker.expected(f["type"], ns)
        found = _found(info.annotation)
        if expected != found:
            problems.append(_type_problem(where, f["type"], expected, found))
        exception = producer_defaults.get((name, fname))
        if "default" not in f:
            if not info.is_required() and exception is None:
                shown = info.get_default(call_default_factory=True)
                problems.append(
                    f"{where}: default differs: the schema has none, so the field must be required; found "
                    f"default {shown!r} (if it only spares producers, list it in PRODUCER_SIDE_DEFAULTS with why)"
                )
            elif info.is_required() and exception is not None:
                problems.append(
                    f"{where}: listed in PRODUCER_SIDE_DEFAULTS but the model requires it; remove the entry"
                )
            continue
        if exception is not None:
            problems.append(f"{where}: listed in PRODUCER_SIDE_DEFAULTS but the schema has a default; remove the entry")
        avro_default = walker.default(f["type"], f["default"], ns)
        if info.is_required():
            problems.append(
                f"{where}: default differs: expected default {avro_default!r} (from the schema), found a required field"
            )
            continue
        model_default = info.get_default(call_default_factory=True)
        if not _same_default(avro_default, model_default):
            problems.append(
                f"{where}: default differs: expected {avro_default!r} (from the schema), found {model_default!r}"
            )
    return problems


def check_models_against_schemas(
    catalogue: Catalogue | None = None,
    models: Sequence[type[Record]] = RECORD_MODELS,
    *,
    producer_defaults: Mapping[tuple[str, str], str] = PRODUCER_SIDE_DEFAULTS,
) -> list[str]:
    """Every way a model differs from the newest version of its schema (empty when all mirror them)."""
    catalogue = catalogue or default_catalogue()
    problems: list[str] = []
    for model in models:
        problems += _check_model(model, catalogue, producer_defaults)
    covered = {subject_of(m.avro_name) for m in (*RECORD_MODELS, *models)}
    for subject, versions in sorted(catalogue.by_subject.items()):
        if versions[-1].inlined.get("type") in ("record", "error") and subject not in covered:
            problems.append(f"{subject}: schema has no model ({versions[-1].path.name}); add one to RECORD_MODELS")
    return problems
