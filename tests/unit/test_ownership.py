"""Resource ownership: id patterns and a module:function hook say whose record an argument names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from baton.policy.ownership import FirstKnown, HookOwners, PatternOwners, Unowned, cross_tenant, owners_from_config
from baton.policy.tenants import TenantConfigError, load_tenants, parse_tenants
from baton_demo.world import World, seeded_tenant

PATTERNS = PatternOwners({"acme": {"customer_id": "^acme-"}, "globex": {"customer_id": "^gx-", "invoice": "^inv-g"}})


def test_patterns_name_the_owner_and_say_unknown_for_arguments_no_tenant_declares() -> None:
    assert PATTERNS.owner_of("customer_id", "acme-7") == "acme"
    assert PATTERNS.owner_of("customer_id", "gx-7") == "globex"
    assert PATTERNS.owner_of("customer_id", "other-7") is None
    assert PATTERNS.owner_of("order_id", "acme-7") is Unowned.UNKNOWN
    overlapping = PatternOwners({"a": {"id": "^x"}, "b": {"id": "^xy"}})
    assert overlapping.owner_of("id", "xyz") is Unowned.AMBIGUOUS


def test_cross_tenant_names_each_argument_naming_another_tenants_record_and_what_to_do() -> None:
    args: dict[str, Any] = {"customer_id": "gx-1", "invoice": "inv-g-2", "note": "acme-1", "ids": ["acme-2", "gx-3"]}
    owners = PatternOwners(
        {
            "acme": {"customer_id": "^acme-", "ids": "^acme-"},
            "globex": {"customer_id": "^gx-", "ids": "^gx-", "invoice": "^inv-g"},
        }
    )
    problems = cross_tenant(args, "acme", owners)
    assert [p.split("=")[0] for p in problems] == ["customer_id", "ids", "invoice"]
    assert "is a record of tenant 'globex', not of 'acme'" in problems[0]
    assert "submit the task under the tenant that owns it" in problems[0]
    assert cross_tenant({"customer_id": "acme-1", "amount": 3}, "acme", owners) == []
    ambiguous = PatternOwners({"a": {"id": "^x"}, "b": {"id": "^xy"}})
    assert "disjoint" in cross_tenant({"id": "xy1"}, "a", ambiguous)[0]


def test_a_hook_answers_after_the_patterns_and_keyerror_means_unknown() -> None:
    def hook(argument: str, value: Any) -> str | None:
        if argument != "ticket_id":
            raise KeyError(argument)
        return {"t-1": "acme"}.get(value)

    owners = FirstKnown([PATTERNS, HookOwners(hook)])
    assert owners.owner_of("customer_id", "gx-1") == "globex"
    assert owners.owner_of("ticket_id", "t-1") == "acme"
    assert owners.owner_of("ticket_id", "t-2") is None
    assert owners.owner_of("colour", "red") is Unowned.UNKNOWN


def test_a_hook_that_cannot_be_loaded_says_what_to_fix() -> None:
    with pytest.raises(TenantConfigError, match=r"cannot be loaded .*install the module or fix the name"):
        HookOwners.load("no_such_module_anywhere:owner")
    with pytest.raises(TenantConfigError, match="cannot be loaded"):
        HookOwners.load("baton_demo.ownership:no_such_function")
    config = parse_tenants("tenants: {a: {daily_spend_limit_usd: 1, tasks_per_minute: 1, resources: {id: '^a'}}}")
    assert owners_from_config(config).owner_of("id", "a1") == "a"


def test_the_demo_hook_asks_the_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=6, seed=1)
    monkeypatch.setenv("BATON_WORLD_DB", str(tmp_path / "world.db"))
    owners = owners_from_config(load_tenants())
    customer = "cust-00001"  # seed() gives customer i the id cust-<i> and the tenant seeded_tenant(i)
    assert owners.owner_of("customer_id", customer) == seeded_tenant(1)
    assert owners.owner_of("customer_id", "cust-99999") is None
    assert owners.owner_of("amount", 3) is Unowned.UNKNOWN
    assert cross_tenant({"customer_id": customer}, seeded_tenant(2), owners)
    world.close()
