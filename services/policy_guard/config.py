"""Settings of the policy guard (env prefix BATON_POLICY_GUARD_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    # Tenants, their daily spend limits, the prices and who owns which record: tenants.yaml beside the workflow
    # declarations (or this file). Without one: a single-tenant deployment, nothing is charged or limited and
    # no argument is checked for another tenant's record (the guard logs it at start).
    tenants_file: Path | None = None
    # The tenants' daily accounts, shared by every guard replica (docs/decisions/0018-spend-and-admission.md):
    # embedded = SQLite at spend_sqlite_path (one host); mongodb = spend_mongodb_url.
    spend_store: Literal["embedded", "mongodb"] = "embedded"
    spend_sqlite_path: Path = Path(".baton/spend.db")
    spend_mongodb_url: str = "mongodb://127.0.0.1:27017/"
    spend_mongodb_database: str = "baton"
    # Verdicts remembered by call id, so a redelivered request gets the same verdict and costs once.
    remember_verdicts: int = 10_000
    # Overrides every declared approval SLA (seconds), e.g. for an SLA drill; unset: each tool's approval rule,
    # else its workflow's escalation SLA.
    approval_sla_s: float | None = None
