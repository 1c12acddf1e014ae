"""The reference world as an agent's store: its step ledger and tools, raising the library's errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baton.ledger import StepBusyError
from baton.tools import ToolError
from baton_demo import world


class WorldStore(world.World):
    """The world database, raising baton.ledger.StepBusyError and baton.tools.ToolError (what the agent catches)."""

    def begin_step(
        self, step_key: str, *, workflow_id: str, agent: str, tenant_id: str, owner: str = "", lease_s: float = 300.0
    ) -> tuple[str | None, str]:
        try:
            return super().begin_step(
                step_key, workflow_id=workflow_id, agent=agent, tenant_id=tenant_id, owner=owner, lease_s=lease_s
            )
        except world.StepBusyError as exc:
            raise StepBusyError(str(exc)) from exc

    def call(self, tool: str, arguments: Mapping[str, Any], *, idempotency_key: str, tenant_id: str) -> dict[str, Any]:
        try:
            return super().call(tool, arguments, idempotency_key=idempotency_key, tenant_id=tenant_id)
        except world.ToolError as exc:
            raise ToolError(exc.code, str(exc)) from exc
