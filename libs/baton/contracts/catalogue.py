"""Loads the versioned Avro schemas under schemas/ and resolves named types between files."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

Schema = dict[str, Any]

_FILE_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)\.avsc$")
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class SchemaCatalogueError(ValueError):
    """A schema file is missing, malformed or inconsistent with its name."""


def default_schema_dir() -> Path:
    """schemas/ of the checkout, or BATON_SCHEMA_DIR."""
    env = os.environ.get("BATON_SCHEMA_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "schemas"
        if (candidate / "events").is_dir():
            return candidate
    raise SchemaCatalogueError(
        "cannot find the schemas/ directory next to the Baton package; set BATON_SCHEMA_DIR to its path"
    )


def subject_of(full_name: str) -> str:
    """Registry subject of a versioned record name: the name with its .vN namespace part removed."""
    namespace, _, name = full_name.rpartition(".")
    base_ns = re.sub(r"\.v[0-9]+$", "", namespace)
    return f"{base_ns}.{name}"


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one schema, as written in its file and fully inlined."""

    subject: str
    full_name: str
    version: int
    path: Path
    raw: Schema
    inlined: Schema
    schema_id: int


@dataclass
class Catalogue:
    """All schemas under a directory, by full name and by subject."""

    root: Path
    by_name: dict[str, SchemaVersion] = field(default_factory=dict)
    by_subject: dict[str, list[SchemaVersion]] = field(default_factory=dict)
    by_id: dict[int, SchemaVersion] = field(default_factory=dict)

    def latest(self, subject: str) -> SchemaVersion:
        """Newest version of a subject."""
        try:
            return self.by_subject[subject][-1]
        except KeyError:
            raise SchemaCatalogueError(f"no schema for subject {subject!r} under {self.root}") from None


def _full_name(schema: Schema, default_ns: str | None = None) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    ns = schema.get("namespace", default_ns)
    return f"{ns}.{name}" if ns else name


def _collect_named(schema: Any, ns: str | None, out: dict[str, Schema]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, ns, out)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        full = _full_name(schema, ns)
        out[full] = schema
        inner_ns = full.rpartition(".")[0] or None
        for f in schema.get("fields", []):
            _collect_named(f["type"], inner_ns, out)
    elif kind == "array":
        _collect_named(schema["items"], ns, out)
    elif kind == "map":
        _collect_named(schema["values"], ns, out)


def inline(schema: Schema, named: dict[str, Schema]) -> Schema:
    """Replace references to named types in other files by their definitions (first use only)."""
    defined: set[str] = set()

    def walk(node: Any, ns: str | None) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = node if "." in node else (f"{ns}.{node}" if ns else node)
            if full in defined:
                return full
            if full not in named:
                raise SchemaCatalogueError(f"unknown named type {node!r}")
            return walk(copy.deepcopy(named[full]), ns)
        if isinstance(node, list):
            return [walk(branch, ns) for branch in node]
        if isinstance(node, dict):
            node = dict(node)
            kind = node.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                full = _full_name(node, ns)
                defined.add(full)
                node["name"] = full.rpartition(".")[2]
                if "." in full:
                    node["namespace"] = full.rpartition(".")[0]
                inner_ns = full.rpartition(".")[0] or None
                if "fields" in node:
                    node["fields"] = [dict(f, type=walk(f["type"], inner_ns)) for f in node["fields"]]
                return node
            if kind == "array":
                node["items"] = walk(node["items"], ns)
                return node
            if kind == "map":
                node["values"] = walk(node["values"], ns)
                return node
            if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _PRIMITIVES):
                return walk(kind, ns)
            return node
        raise SchemaCatalogueError(f"unexpected schema node {node!r}")

    return dict(walk(schema, None))


def schema_id_of(inlined: Schema) -> int:
    """Stable schema id for the embedded registry: 31 bits of SHA-256 of the canonical form."""
    canonical = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(inlined, _write_hint=False))
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:4], "big") & 0x7FFFFFFF


def load_catalogue(root: Path | None = None) -> Catalogue:
    """Read every NAME.vN.avsc under root, check names against files and inline cross-file types."""
    root = root or default_schema_dir()
    files = sorted(root.rglob("*.avsc"))
    if not files:
        raise SchemaCatalogueError(f"no .avsc files under {root}")
    raw: list[tuple[Path, Schema, int]] = []
    named: dict[str, Schema] = {}
    for path in files:
        m = _FILE_RE.match(path.name)
        if not m:
            raise SchemaCatalogueError(f"{path}: schema files must be named NAME.vN.avsc")
        try:
            schema = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SchemaCatalogueError(f"{path}: not valid JSON: {exc}") from exc
        version = int(m["version"])
        ns = str(schema.get("namespace", ""))
        if schema.get("name") != m["name"] or not ns.endswith(f".v{version}"):
            raise SchemaCatalogueError(
                f"{path}: name {schema.get('name')!r} and namespace {ns!r} must match the file: "
                f"name {m['name']!r} and a namespace ending in '.v{version}'"
            )
        _collect_named(schema, None, named)
        raw.append((path, schema, version))
    cat = Catalogue(root=root)
    for path, schema, version in raw:
        full = _full_name(schema)
        inlined = inline(schema, named)
        try:
            fastavro.parse_schema(inlined)
        except Exception as exc:  # fastavro raises several types for invalid schemas
            raise SchemaCatalogueError(f"{path}: invalid Avro schema: {exc}") from exc
        sv = SchemaVersion(
            subject=subject_of(full),
            full_name=full,
            version=version,
            path=path,
            raw=schema,
            inlined=inlined,
            schema_id=schema_id_of(inlined),
        )
        if sv.schema_id in cat.by_id:
            raise SchemaCatalogueError(f"{path}: schema id collides with {cat.by_id[sv.schema_id].path}")
        cat.by_name[full] = sv
        cat.by_id[sv.schema_id] = sv
        cat.by_subject.setdefault(sv.subject, []).append(sv)
    for versions in cat.by_subject.values():
        versions.sort(key=lambda v: v.version)
        numbers = [v.version for v in versions]
        if numbers != list(range(1, len(numbers) + 1)):
            raise SchemaCatalogueError(
                f"subject {versions[0].subject} has versions {numbers}; versions must be 1..N with no gap"
            )
    return cat


@cache
def default_catalogue() -> Catalogue:
    """The catalogue of the repository's schemas/ (loaded once)."""
    return load_catalogue()
