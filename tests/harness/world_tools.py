"""The reference world's tools on a registry and a ledger, as the agent service runs them (unit tests)."""

from __future__ import annotations

from baton.ledger import Ledger
from baton.tools import PythonToolProvider, ToolRegistry
from baton.tools.executor import StepTools
from baton_demo.world import World
from baton_demo.world_tools import world_tools


async def world_registry(world: World) -> ToolRegistry:
    """A started registry over the world's tool pack."""
    registry = ToolRegistry([PythonToolProvider(world_tools(world), name="world")])
    await registry.start()
    return registry


async def step_tools(
    world: World, ledger: Ledger, *, workflow_id: str, agent: str, tenant: str, version: int = 0
) -> StepTools:
    """One step's tools over the world, keyed and recorded in the ledger."""
    return StepTools(
        registry=await world_registry(world),
        ledger=ledger,
        workflow_id=workflow_id,
        agent=agent,
        tenant_id=tenant,
        step_version=version,
    )
