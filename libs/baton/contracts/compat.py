"""The contract gate: can a reader on the new schema read data written with the old one, and do the
typed models mirror the newest schemas?

Implements the Avro specification's schema resolution rules, reporting every
incompatibility with the path of the field it concerns; the model check is
baton.contracts.mirror.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from baton.contracts.catalogue import Catalogue, Schema
from baton.contracts.mirror import check_models_against_schemas

_PROMOTIONS: dict[str, set[str]] = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


@dataclass(frozen=True)
class Incompatibility:
    """One reason the reader cannot read the writer's data."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class _Resolver:
    def __init__(self) -> None:
        self.reader_named: dict[str, Any] = {}
        self.writer_named: dict[str, Any] = {}
        self.seen: set[tuple[str, str]] = set()

    def _deref(self, schema: Any, named: dict[str, Any], ns: str) -> tuple[Any, str]:
        if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
            return self._deref(schema["type"], named, ns)
        if isinstance(schema, dict) and schema.get("type") in ("record", "error", "enum", "fixed"):
            name = schema["name"] if "." in schema["name"] else f"{schema.get('namespace', ns)}.{schema['name']}"
            named[name] = schema
            return schema, name.rpartition(".")[0]
        if isinstance(schema, str) and schema not in _PROMOTIONS and schema not in ("null", "boolean", "double"):
            full = schema if "." in schema else f"{ns}.{schema}"
            if full in named:
                return named[full], full.rpartition(".")[0]
        return schema, ns

    @staticmethod
    def _kind(schema: Any) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, dict):
            kind = schema["type"]
            return kind if isinstance(kind, str) else "union"
        return str(schema)

    @staticmethod
    def _names(schema: dict[str, Any], ns: str) -> set[str]:
        name = schema["name"]
        full = name if "." in name else f"{schema.get('namespace', ns)}.{name}"
        names = {full, full.rpartition(".")[2]}
        for alias in schema.get("aliases", []):
            names.add(alias)
            names.add(alias.rpartition(".")[2])
        return names

    def check(self, reader: Any, writer: Any, path: str, rns: str = "", wns: str = "") -> list[Incompatibility]:
        reader, rns = self._deref(reader, self.reader_named, rns)
        writer, wns = self._deref(writer, self.writer_named, wns)
        rk, wk = self._kind(reader), self._kind(writer)
        if wk == "union":
            problems: list[Incompatibility] = []
            for i, branch in enumerate(writer if isinstance(writer, list) else writer["type"]):
                problems += self.check(reader, branch, f"{path}<union branch {i}>", rns, wns)
            return problems
        if rk == "union":
            branches = reader if isinstance(reader, list) else reader["type"]
            for branch in branches:
                if not self.check(branch, writer, path, rns, wns):
                    return []
            return [Incompatibility(path, f"writer type {wk!r} matches no branch of the reader's union")]
        if rk != wk:
            if wk in _PROMOTIONS and rk in _PROMOTIONS[wk]:
                return []
            return [Incompatibility(path, f"type changed from {wk!r} to {rk!r}, which Avro cannot promote")]
        if rk == "record":
            return self._record(reader, writer, path, rns, wns)
        if rk == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                return [Incompatibility(path, f"enum symbols {missing} were removed and the enum has no default")]
            return []
        if rk == "array":
            return self.check(reader["items"], writer["items"], f"{path}[]", rns, wns)
        if rk == "map":
            return self.check(reader["values"], writer["values"], f"{path}{{}}", rns, wns)
        if rk == "fixed" and reader["size"] != writer["size"]:
            return [Incompatibility(path, f"fixed size changed from {writer['size']} to {reader['size']}")]
        return []

    def _record(
        self, reader: dict[str, Any], writer: dict[str, Any], path: str, rns: str, wns: str
    ) -> list[Incompatibility]:
        rnames, wnames = self._names(reader, rns), self._names(writer, wns)
        key = (min(rnames), min(wnames))
        if key in self.seen:  # recursive types: already being checked
            return []
        self.seen.add(key)
        if not (rnames & wnames):
            return [
                Incompatibility(
                    path, f"record name changed from {sorted(wnames)[0]!r} to {sorted(rnames)[0]!r} with no alias"
                )
            ]
        problems: list[Incompatibility] = []
        wfields = {f["name"]: f for f in writer.get("fields", [])}
        for rf in reader.get("fields", []):
            fpath = f"{path}.{rf['name']}" if path else rf["name"]
            wf = wfields.get(rf["name"]) or next((wfields[a] for a in rf.get("aliases", []) if a in wfields), None)
            if wf is None:
                if "default" not in rf:
                    problems.append(
                        Incompatibility(
                            fpath,
                            f"field {rf['name']!r} was added without a default, so data written with the "
                            "previous version cannot be read: give it a default (e.g. make it "
                            '["null", ...] with "default": null)',
                        )
                    )
                continue
            problems += self.check(rf["type"], wf["type"], fpath, rns, wns)
        return problems


def backward_incompatibilities(reader: Schema, writer: Schema) -> list[Incompatibility]:
    """Why a reader on `reader` cannot read data written with `writer` (empty when it can)."""
    return _Resolver().check(reader, writer, "", "", "")


def check_catalogue(catalogue: Catalogue) -> list[str]:
    """The contract gate: every BACKWARD incompatibility, then every model that differs from its newest schema."""
    return backward_problems(catalogue) + check_models_against_schemas(catalogue)


def backward_problems(catalogue: Catalogue) -> list[str]:
    """Every BACKWARD incompatibility between consecutive versions of every subject."""
    problems: list[str] = []
    for subject, versions in sorted(catalogue.by_subject.items()):
        for old, new in itertools.pairwise(versions):
            for inc in backward_incompatibilities(new.inlined, old.inlined):
                problems.append(
                    f"{subject} v{new.version} is not BACKWARD compatible with v{old.version} ({new.path.name}): {inc}"
                )
    return problems
