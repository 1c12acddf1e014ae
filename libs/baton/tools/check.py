"""The declaration check: every tool a workflow pins exists in the registry, at that version, with a tier no
lower than its own, bound to parameters it has, and with the schema it had when it was locked.

`baton tools check` runs it over a workflow directory (in `make test`, like the Avro gate); `baton tools lock`
records each pinned version's schemas in `tools.lock.json` beside the declarations. A tool whose schema changed
incompatibly without a new version is refused: the workflow was written against the old one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from baton.contracts.models import PermissionTier
from baton.tools.base import ToolDeclaration
from baton.tools.registry import ToolRegistry
from baton.workflows import TOOL_LOCK_FILE, AgentSpec, ToolSpec, WorkflowSpec

_RANK = {PermissionTier.READ: 0, PermissionTier.WRITE: 1, PermissionTier.IRREVERSIBLE: 2}


def _tool_problems(agent: AgentSpec, spec: ToolSpec, found: ToolDeclaration | None) -> list[str]:
    where = f"{agent.name}: tool {spec.name}"
    if found is None:
        return [
            f"{where} is not in the registry: add it to a tool pack (tools.yaml, BATON_AGENT_TOOLS) or fix the name"
        ]
    problems: list[str] = []
    if spec.version is None:
        problems.append(f"{where} is not pinned to a version: add `version: {found.version!r}`")
    elif spec.version != found.version:
        problems.append(
            f"{where} is pinned to version {spec.version!r}, the registry offers {found.ref}: review the new "
            "version's schema and update the pin"
        )
    if found.tier is not None and _RANK[spec.tier] < _RANK[found.tier]:
        problems.append(
            f"{where} is declared {spec.tier.value}, below the tool's own tier {found.tier.value}: a workflow may "
            "raise a tool's tier, never lower it"
        )
    properties = found.parameters.get("properties")
    if isinstance(properties, Mapping):
        unknown = sorted(set(spec.args) - set(properties))
        if unknown:
            problems.append(
                f"{where} binds {unknown}, which {found.ref} has no parameter for; it has {sorted(properties)}"
            )
        required = found.parameters.get("required", [])
        unbound = sorted(set(required) - set(spec.args))
        if unbound and spec.tier is not PermissionTier.READ:
            problems.append(
                f"{where} is {spec.tier.value} and acts only on bound values, but its required parameters "
                f"{unbound} are not bound to the context: add them to `args`"
            )
    return problems


def agent_tool_problems(agent: AgentSpec, registry: ToolRegistry) -> list[str]:
    """What is wrong between one agent's declared tools and the registry (empty when they match)."""
    return [p for spec in agent.tools for p in _tool_problems(agent, spec, registry.get(spec.name))]


def _types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    return {kind} if isinstance(kind, str) else set(kind) if isinstance(kind, list) else set()


def schema_breaks(old: Mapping[str, Any], new: Mapping[str, Any], *, side: str) -> list[str]:
    """Why a caller written against `old` breaks under `new` (empty when compatible).

    parameters: a new required property, a property removed, or a property whose type narrowed;
    returns: a property the result no longer carries (or no longer promises), or whose type changed.
    """
    breaks: list[str] = []
    old_props: Mapping[str, Any] = old.get("properties") or {}
    new_props: Mapping[str, Any] = new.get("properties") or {}
    if side == "parameters":
        for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
            breaks.append(f"parameter {name} became required")
        for name in sorted(set(old_props) - set(new_props)):
            if new.get("additionalProperties", True) is False:
                breaks.append(f"parameter {name} was removed")
        for name in sorted(set(old_props) & set(new_props)):
            before, after = _types(old_props[name]), _types(new_props[name])
            if before and after and not before <= after:
                breaks.append(f"parameter {name} accepted {sorted(before)}, now only {sorted(after)}")
    else:
        for name in sorted(set(old.get("required", [])) - set(new.get("required", []))):
            breaks.append(f"result field {name} is no longer promised")
        for name in sorted(set(old_props) - set(new_props)):
            breaks.append(f"result field {name} was removed")
        for name in sorted(set(old_props) & set(new_props)):
            before, after = _types(old_props[name]), _types(new_props[name])
            if before and after and not after <= before:
                breaks.append(f"result field {name} was {sorted(before)}, now may be {sorted(after)}")
    return breaks


_PROSE = frozenset({"title", "description", "examples"})


def _normal(schema: Any) -> Any:
    """A schema without its prose (titles, descriptions, examples), which never breaks a caller."""
    if isinstance(schema, Mapping):
        return {k: _normal(v) for k, v in schema.items() if k not in _PROSE}
    if isinstance(schema, list):
        return [_normal(v) for v in schema]
    return schema


def unproven_changes(old: Mapping[str, Any], new: Mapping[str, Any], *, side: str) -> list[str]:
    """Changes the rules of schema_breaks cannot judge (inside a property, a $ref'd model, anyOf, ...): refused
    rather than guessed compatible."""
    before, after = _normal(old), _normal(new)
    if before == after:
        return []
    out: list[str] = []
    old_props, new_props = before.get("properties") or {}, after.get("properties") or {}
    for name in sorted(set(old_props) & set(new_props)):
        if old_props[name] != new_props[name] and _types(old_props[name]) == _types(new_props[name]):
            out.append(f"{side} field {name} changed inside (not only its type)")
    rest = sorted(k for k in {*before, *after} - {"properties", "required", "type"} if before.get(k) != after.get(k))
    if rest:
        out.append(f"{side} changed in {rest}")
    return out


def incompatibilities(old: Mapping[str, Any], new: Mapping[str, Any], *, side: str) -> list[str]:
    """Every reason a locked schema's callers may break under the new one."""
    return schema_breaks(old, new, side=side) + unproven_changes(old, new, side=side)


def lock_entry(declaration: ToolDeclaration) -> dict[str, Any]:
    return {"parameters": dict(declaration.parameters), "returns": dict(declaration.returns)}


def pinned(workflows: Mapping[str, WorkflowSpec]) -> dict[str, ToolSpec]:
    """Every tool the declarations pin, by name (a tool pinned twice at different versions is reported)."""
    return {t.name: t for wf in workflows.values() for a in wf.agents for t in a.tools}


def declaration_problems(
    workflows: Mapping[str, WorkflowSpec], registry: ToolRegistry, lock: Mapping[str, Any]
) -> list[str]:
    """Everything `baton tools check` refuses, one line each."""
    problems: list[str] = []
    versions: dict[str, set[str]] = {}
    for wf in workflows.values():
        for agent in wf.agents:
            problems.extend(f"{wf.name}.{p}" for p in agent_tool_problems(agent, registry))
            for spec in agent.tools:
                versions.setdefault(spec.name, set()).add(spec.version or "?")
    for name, vs in sorted(versions.items()):
        if len(vs) > 1:
            problems.append(f"tool {name} is pinned at several versions {sorted(vs)}: one registry serves one")
    for name, spec in sorted(pinned(workflows).items()):
        found = registry.get(name)
        if found is None or spec.version != found.version:
            continue
        locked = lock.get(found.ref)
        if locked is None:
            problems.append(f"{found.ref} is not in {TOOL_LOCK_FILE}: run `baton tools lock` and commit the file")
            continue
        for side in ("parameters", "returns"):
            for why in incompatibilities(locked[side], getattr(found, side), side=side):
                problems.append(
                    f"{found.ref} changed incompatibly since it was locked ({why}): give the tool a new version "
                    "and pin it, or restore its schema"
                )
    return problems


def read_lock(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def write_lock(
    path: Path, workflows: Mapping[str, WorkflowSpec], registry: ToolRegistry, old: Mapping[str, Any]
) -> list[str]:
    """Record the schemas of every pinned version not yet locked (or changed compatibly); returns the refs
    left alone because their schema changed incompatibly (the check reports those)."""
    entries = dict(old)
    refused: list[str] = []
    for name in sorted(pinned(workflows)):
        found = registry.get(name)
        if found is None:
            continue
        locked = entries.get(found.ref)
        if locked is not None and any(
            incompatibilities(locked[side], getattr(found, side), side=side) for side in ("parameters", "returns")
        ):
            refused.append(found.ref)
            continue
        entries[found.ref] = lock_entry(found)
    path.write_text(json.dumps(dict(sorted(entries.items())), indent=2, sort_keys=True) + "\n")
    return refused
