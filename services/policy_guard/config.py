"""Settings of the policy guard (env prefix BATON_POLICY_GUARD_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.runtime import RuntimeSettings


class Settings(BaseSettings):
    """Policy guard knobs. Policies come from <workflow dir>/policies/*.cedar (BATON_WORKFLOW_DIR)."""

    model_config = SettingsConfigDict(env_prefix="BATON_POLICY_GUARD_", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    # How long a grant may wait between the verdict and the call (the agent calls at once; a replayed grant
    # found later is refused as used anyway).
    grant_ttl_s: float = 60.0
    # Per agent in a workflow: more than this many tool calls in the window halts the workflow (runaway agent).
    tool_calls_per_window: int = 50
    rate_window_s: float = 60.0
    # Spend: each tenant's daily limit (USD) and what calls and tokens cost.
    daily_limit_usd: dict[str, float] = Field(default_factory=dict)
    default_daily_limit_usd: float = 100.0
    tool_cost_usd: dict[str, float] = Field(default_factory=dict)
    default_tool_cost_usd: float = 0.0
    usd_per_1k_tokens: float = 0.0
    # Which tenant owns the record a tool argument names: a Python function `module:function(argument, value)`
    # returning the tenant id or None (e.g. baton_demo.world_tools:owner_of). Unset: no cross-tenant check.
    owners: str = ""
    # Verdicts remembered by call id, so a redelivered request gets the same verdict and costs once.
    remember_verdicts: int = 10_000
