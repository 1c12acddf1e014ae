"""What an agent service keeps its steps and runs its tools in: the step ledger interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class StepBusyError(Exception):
    """Another replica holds a live claim on this step."""


class AgentStore(Protocol):
    """The step ledger (each step once in effect, its events stored before they are published) and the tools.

    `call` raises baton.tools.ToolError when a tool refuses; `begin_step` raises StepBusyError while another
    owner's claim on the step is live.
    """

    def begin_step(
        self, step_key: str, *, workflow_id: str, agent: str, tenant_id: str, owner: str = "", lease_s: float = 300.0
    ) -> tuple[str | None, str]:
        """Claim a step: (its stored events when it already completed, else None; the workflow's tenant)."""
        ...

    def step_completed(self, step_key: str, result_json: str) -> None:
        """Store a finished step's events, durably: they are published only after this returns."""
        ...

    def step_abandoned(self, step_key: str, *, owner: str) -> None:
        """Release a claim whose step failed before completing."""
        ...

    def call(self, tool: str, arguments: Mapping[str, Any], *, idempotency_key: str, tenant_id: str) -> dict[str, Any]:
        """Run a tool by name for a tenant."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
