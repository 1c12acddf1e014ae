"""Settings of the supervisor (env prefix BATON_SUPERVISOR_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.handoff import DEFAULT_MAX_CONTEXT_BYTES
from baton.runtime import RuntimeSettings


class Settings(BaseSettings):
    """Supervisor knobs."""

    model_config = SettingsConfigDict(env_prefix="BATON_SUPERVISOR_", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    sweep_interval_s: float = 1.0
    # A running workflow with no progress for this long gets its step re-issued (idempotent), with a warning.
    stall_after_s: float = 60.0
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
    # Finished workflows remembered (id, seq, outcome) to ignore redelivered tasks and late events.
    finished_capacity: int = 10_000
