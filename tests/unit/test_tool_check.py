"""The declaration check: pins against the registry, tiers never lowered, bindings to real parameters, and a
locked schema that changed incompatibly refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from baton.contracts.models import PermissionTier
from baton.tools import ToolDeclaration, ToolRegistry
from baton.tools.check import declaration_problems, lock_entry, read_lock, schema_breaks, write_lock
from baton.workflows import AgentSpec, Escalation, ModelSpec, ToolSpec, WorkflowSpec

PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["invoice_id", "amount"],
    "additionalProperties": False,
}
RETURNS: dict[str, Any] = {
    "type": "object",
    "properties": {"payment_id": {"type": "string"}},
    "required": ["payment_id"],
}


class Fixed:
    """A provider with fixed declarations (the check never calls a tool)."""

    name = "fixed"

    def __init__(self, *declarations: ToolDeclaration) -> None:
        self._declarations = declarations

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def declarations(self) -> list[ToolDeclaration]:
        return list(self._declarations)

    async def invoke(self, call: Any) -> Any:
        raise AssertionError("the check never runs a tool")


def _pay(**changes: Any) -> ToolDeclaration:
    fields: dict[str, Any] = {
        "name": "pay",
        "version": "1",
        "description": "pay an invoice",
        "parameters": PARAMS,
        "returns": RETURNS,
        "tier": PermissionTier.IRREVERSIBLE,
    }
    return ToolDeclaration(**{**fields, **changes})


def _workflow(**tool: Any) -> dict[str, WorkflowSpec]:
    spec = ToolSpec(
        **{
            "name": "pay",
            "version": "1",
            "tier": PermissionTier.IRREVERSIBLE,
            "args": {"invoice_id": "invoice.id", "amount": "invoice.total"},
            "result_key": "payment",
            **tool,
        }
    )
    agent = AgentSpec(name="payer", outputs=["payment"], tools=[spec])
    wf = WorkflowSpec(
        name="invoices", pattern="pipeline", autonomy_level=3, agents=[agent], escalation=Escalation(queue="ap")
    )
    return {wf.name: wf}


async def _problems(workflows: dict[str, WorkflowSpec], *declarations: ToolDeclaration, lock: Any = None) -> list[str]:
    registry = ToolRegistry([Fixed(*declarations)])
    await registry.start()
    return declaration_problems(workflows, registry, {"pay@1": lock_entry(_pay())} if lock is None else lock)


async def test_a_declaration_matching_the_registry_and_its_lock_passes() -> None:
    assert await _problems(_workflow(), _pay()) == []


@pytest.mark.parametrize(
    ("tool", "declared", "words"),
    [
        ({"name": "refund"}, _pay(), "tool refund is not in the registry"),
        ({"version": "2"}, _pay(), "pinned to version '2', the registry offers pay@1"),
        ({"version": None}, _pay(), "is not pinned to a version"),
        ({"tier": PermissionTier.READ}, _pay(), "below the tool's own tier IRREVERSIBLE"),
        ({"args": {"invoice_id": "invoice.id", "amount": "x", "memo": "y"}}, _pay(), "binds ['memo']"),
        ({"args": {"invoice_id": "invoice.id"}}, _pay(), "required parameters ['amount'] are not bound"),
    ],
)
async def test_a_declaration_off_the_registry_is_refused_with_the_fix(
    tool: dict[str, Any], declared: ToolDeclaration, words: str
) -> None:
    problems = await _problems(_workflow(**tool), declared)
    assert any(words in p for p in problems), problems


async def test_a_tool_that_carries_no_tier_like_an_mcp_one_takes_the_declarations() -> None:
    assert await _problems(_workflow(tier=PermissionTier.READ, args={"invoice_id": "i"}), _pay(tier=None)) == []


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        (
            {"parameters": {**PARAMS, "required": ["invoice_id", "amount", "currency"]}},
            "parameter currency became required",
        ),
        (
            {"parameters": {**PARAMS, "properties": {"invoice_id": {"type": "integer"}, "amount": {"type": "number"}}}},
            "parameter invoice_id accepted ['string'], now only ['integer']",
        ),
        ({"returns": {"type": "object", "properties": {}}}, "result field payment_id is no longer promised"),
        (
            {"returns": {**RETURNS, "properties": {"payment_id": {"type": "string", "format": "uuid"}}}},
            "returns field payment_id changed inside",
        ),
        (
            {"parameters": {**PARAMS, "$defs": {"Line": {"type": "object", "required": ["sku"]}}}},
            "parameters changed in ['$defs']",
        ),
    ],
)
async def test_a_locked_version_whose_schema_changed_incompatibly_is_refused(changed: dict[str, Any], why: str) -> None:
    problems = await _problems(_workflow(), _pay(**changed))
    assert any("pay@1 changed incompatibly" in p and why in p for p in problems), problems


async def test_a_compatible_change_passes_and_an_unlocked_version_asks_for_the_lock() -> None:
    optional = {**PARAMS, "properties": {**PARAMS["properties"], "memo": {"type": "string"}}}
    assert await _problems(_workflow(), _pay(parameters=optional)) == []
    reworded = {**PARAMS, "title": "Pay", "description": "Pay an invoice, now with prose"}
    assert await _problems(_workflow(), _pay(parameters=reworded)) == []
    assert any("run `baton tools lock`" in p for p in await _problems(_workflow(), _pay(), lock={}))


def test_schema_breaks_is_quiet_for_identical_schemas() -> None:
    assert schema_breaks(PARAMS, PARAMS, side="parameters") == []
    assert schema_breaks(RETURNS, RETURNS, side="returns") == []


async def test_lock_records_new_versions_and_refuses_to_overwrite_an_incompatible_one(tmp_path: Path) -> None:
    registry = ToolRegistry([Fixed(_pay())])
    await registry.start()
    path = tmp_path / "tools.lock.json"
    assert write_lock(path, _workflow(), registry, {}) == []
    assert read_lock(path) == {"pay@1": lock_entry(_pay())}
    broken = ToolRegistry([Fixed(_pay(returns={"type": "object"}))])
    await broken.start()
    assert write_lock(path, _workflow(), broken, read_lock(path)) == ["pay@1"]
    assert read_lock(path) == {"pay@1": lock_entry(_pay())}


def test_an_openai_model_needs_its_name_and_url_and_never_a_key() -> None:
    assert ModelSpec(backend="openai", name="gpt-4o-mini", base_url="https://x/v1").name == "gpt-4o-mini"
    with pytest.raises(ValueError, match="needs both name and base_url"):
        ModelSpec(backend="openai", name="gpt-4o-mini")
    with pytest.raises(ValueError, match="api_key"):
        ModelSpec.model_validate({"backend": "openai", "name": "m", "base_url": "u", "api_key": "sk-1"})


def test_each_agent_gets_its_declared_model_and_the_key_from_configuration() -> None:
    from baton.model import OpenAIChatModel, ScriptedModel
    from services.agent.app import build_model
    from services.agent.config import Settings

    settings = Settings(openai_api_key="sk-from-config")
    strong = AgentSpec(name="planner", model=ModelSpec(backend="openai", name="big-1", base_url="https://llm/v1"))
    cheap = AgentSpec(name="extractor", model=ModelSpec(backend="scripted"))
    planner = build_model(settings, strong)
    assert isinstance(planner, OpenAIChatModel)
    assert (planner.base_url, planner.model, planner.api_key) == ("https://llm/v1", "big-1", "sk-from-config")
    assert isinstance(build_model(settings, cheap), ScriptedModel)
    # No model declared: the service's configured backend.
    assert isinstance(build_model(Settings(backend="openai"), AgentSpec(name="x")), OpenAIChatModel)
    # A remote model without a key is refused at start; the key never goes in clear to another host.
    with pytest.raises(SystemExit, match="BATON_AGENT_OPENAI_API_KEY"):
        build_model(Settings(), strong)
    with pytest.raises(ValueError, match="must be https"):
        ModelSpec(backend="openai", name="m", base_url="http://llm.example.com/v1")
    local = AgentSpec(name="local", model=ModelSpec(backend="openai", name="m", base_url="http://127.0.0.1:8000/v1"))
    assert isinstance(build_model(Settings(), local), OpenAIChatModel)
