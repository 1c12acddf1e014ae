"""tenants.yaml: the shipped file loads, load_workflows skips it, and a wrong file names the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.policy.tenants import TenantConfigError, load_tenants, parse_tenants
from baton.workflows import TENANTS_FILE, default_workflow_dir, load_workflows
from baton_demo.world import seeded_tenant


def test_the_shipped_tenants_cover_the_demo_and_one_inactive_tenant() -> None:
    config = load_tenants()
    for i in range(3):
        spec = config.tenant(seeded_tenant(i))
        assert spec is not None and spec.active and spec.daily_spend_limit_usd > 0 and spec.tasks_per_minute > 0
    retired = config.tenant("tenant-retired")
    assert retired is not None and not retired.active
    assert config.ownership_hook == "baton_demo.ownership:world_owner"
    assert (default_workflow_dir() / TENANTS_FILE).is_file()
    assert all(spec.name != "tenants" for spec in load_workflows().values())


def test_prices_of_models_and_tools_with_defaults() -> None:
    prices = parse_tenants(
        "tenants: {}\n"
        "prices: {default_model_per_1k_tokens_usd: 0.01, models: {cheap: 0.001},"
        " default_tool_call_usd: 0.002, tools: {issue_refund: 0.05}}\n"
    ).prices
    assert prices.model_cost_usd("cheap", 2000) == pytest.approx(0.002)
    assert prices.model_cost_usd("unlisted", 1000) == pytest.approx(0.01)
    assert prices.model_cost_usd(None, 500) == pytest.approx(0.005)
    assert prices.tool_call_usd("issue_refund") == 0.05 and prices.tool_call_usd("lookup") == 0.002


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tenants: {a: {active: true, tasks_per_minute: 5}}", "tenants.a.daily_spend_limit_usd: Field required"),
        ("tenants: {a: {daily_spend_limit_usd: -1, tasks_per_minute: 5}}", "tenants.a.daily_spend_limit_usd"),
        ("tenants: {a: {daily_spend_limit_usd: 1, tasks_per_minute: 5, colour: red}}", "tenants.a.colour"),
        ("tenants: {a: {daily_spend_limit_usd: 1, tasks_per_minute: 5, resources: {customer_id: '('}}}", "resources"),
        ("tenants: {}\nownership_hook: not-a-reference", "ownership_hook"),
        ("tenants: {}\nprices: {tools: {x: -1}}", "prices.tools"),
        ("- a list", "must be a mapping"),
        ("tenants: {", "not valid YAML"),
    ],
)
def test_a_wrong_tenants_file_names_the_file_and_the_field(text: str, expected: str) -> None:
    with pytest.raises(TenantConfigError) as err:
        parse_tenants(text, source="conf/tenants.yaml")
    assert "conf/tenants.yaml" in str(err.value) and expected in str(err.value)


def test_a_missing_tenants_file_says_where_it_belongs(tmp_path: Path) -> None:
    with pytest.raises(TenantConfigError, match=r"cannot read tenants file .*BATON_WORKFLOW_DIR"):
        load_tenants(tmp_path / "tenants.yaml")
