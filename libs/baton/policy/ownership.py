"""Which tenant owns the record an argument names, and which arguments name another tenant's record.

Two sources, from tenants.yaml: declarative id patterns per tenant (`resources: {customer_id: "^acme-"}`), and
a Python hook named `module:function` (`ownership_hook`) for records whose owner only a database knows. The
guard asks before a tool call, task admission before a task starts; `cross_tenant` is the rule both apply.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, Protocol

from baton.policy.tenants import TenantConfigError, TenantsConfig


class Unowned(Enum):
    """An answer of `owner_of` that is not a tenant."""

    # This source does not know the argument: another source may (or it names no tenant's record).
    UNKNOWN = "UNKNOWN"
    # Several tenants' patterns match the id: nobody can say whose it is, so it is nobody's to use.
    AMBIGUOUS = "AMBIGUOUS"


# A tenant id; None: the argument is one this source knows, but no record has that id.
Owner = str | None | Unowned
OwnerHook = Callable[[str, Any], str | None]


class ResourceOwners(Protocol):
    def owner_of(self, argument: str, value: Any) -> Owner:
        """The tenant owning the record `argument=value` names."""
        ...


class PatternOwners:
    """Owners by the id patterns each tenant declares under `resources`."""

    def __init__(self, patterns: Mapping[str, Mapping[str, str]]) -> None:
        # argument -> [(tenant, compiled pattern)], in file order
        self._by_argument: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
        for tenant, resources in patterns.items():
            for argument, pattern in resources.items():
                self._by_argument.setdefault(argument, []).append((tenant, re.compile(pattern)))

    @classmethod
    def from_config(cls, config: TenantsConfig) -> PatternOwners:
        return cls({t: spec.resources for t, spec in config.tenants.items()})

    def owner_of(self, argument: str, value: Any) -> Owner:
        patterns = self._by_argument.get(argument)
        if not patterns:
            return Unowned.UNKNOWN
        text = str(value)
        owners = [tenant for tenant, pattern in patterns if pattern.search(text)]
        if len(owners) > 1:
            return Unowned.AMBIGUOUS
        return owners[0] if owners else None


class HookOwners:
    """Owners by a function `(argument, value) -> tenant | None`; arguments outside `arguments` (when given), or
    for which the function raises KeyError, are UNKNOWN."""

    def __init__(self, hook: OwnerHook, *, arguments: Sequence[str] | None = None) -> None:
        self._hook = hook
        self._arguments = frozenset(arguments) if arguments is not None else None

    @classmethod
    def load(cls, reference: str) -> HookOwners:
        """The hook named `module:function`; TenantConfigError saying what to fix when it cannot be loaded.

        The function raises KeyError for an argument it does not know (UNKNOWN: another source may) and returns
        None for an id of an argument it knows but no record has.
        """
        module_name, _, function_name = reference.partition(":")
        try:
            hook = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as exc:
            raise TenantConfigError(
                f"ownership_hook {reference!r} cannot be loaded ({exc}): install the module or fix the name"
            ) from exc
        if not callable(hook):
            raise TenantConfigError(f"ownership_hook {reference!r} is not a function")
        return cls(hook)

    def owner_of(self, argument: str, value: Any) -> Owner:
        if self._arguments is not None and argument not in self._arguments:
            return Unowned.UNKNOWN
        try:
            return self._hook(argument, value)
        except KeyError:
            return Unowned.UNKNOWN


class FirstKnown:
    """The first answer of several sources that is not UNKNOWN."""

    def __init__(self, sources: Sequence[ResourceOwners]) -> None:
        self._sources = list(sources)

    def owner_of(self, argument: str, value: Any) -> Owner:
        for source in self._sources:
            owner = source.owner_of(argument, value)
            if owner is not Unowned.UNKNOWN:
                return owner
        return Unowned.UNKNOWN


def owners_from_config(config: TenantsConfig) -> ResourceOwners:
    """The patterns of tenants.yaml, then its ownership_hook if it names one."""
    sources: list[ResourceOwners] = [PatternOwners.from_config(config)]
    if config.ownership_hook is not None:
        sources.append(HookOwners.load(config.ownership_hook))
    return FirstKnown(sources)


def _ids(value: Any) -> list[Any]:
    """The ids a value names: itself, or each item of a list of ids."""
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str | int) and not isinstance(v, bool)]
    if isinstance(value, str | int) and not isinstance(value, bool):
        return [value]
    return []


def cross_tenant(arguments: Mapping[str, Any], tenant_id: str, owners: ResourceOwners) -> list[str]:
    """One problem per argument naming a record of another tenant (or one whose owner is ambiguous): what
    is wrong and what to do. Empty: every record named is the tenant's own, or names no known record."""
    problems: list[str] = []
    for argument in sorted(arguments):
        for value in _ids(arguments[argument]):
            owner = owners.owner_of(argument, value)
            if owner is Unowned.AMBIGUOUS:
                problems.append(
                    f"{argument}={value!r} matches the resource patterns of several tenants, so it is nobody's "
                    "to use: make the tenants' patterns in tenants.yaml disjoint"
                )
            elif isinstance(owner, str) and owner != tenant_id:
                problems.append(
                    f"{argument}={value!r} is a record of tenant {owner!r}, not of {tenant_id!r}: name a record "
                    f"of {tenant_id!r}, or submit the task under the tenant that owns it"
                )
    return problems
