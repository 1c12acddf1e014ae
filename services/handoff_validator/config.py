"""Settings of the handoff validator (env prefix BATON_HANDOFF_VALIDATOR_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.context import DEFAULT_MAX_CONTEXT_DEPTH
from baton.handoff import DEFAULT_MAX_CONTEXT_BYTES
from baton.runtime import RuntimeSettings


class Settings(BaseSettings):
    """Handoff validator knobs."""

    model_config = SettingsConfigDict(env_prefix="BATON_HANDOFF_VALIDATOR_", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
    max_context_depth: int = DEFAULT_MAX_CONTEXT_DEPTH
    # The agents' ledger, read-only: a tool value in a context must match the result recorded where the tool
    # ran (its receipt). Unset: only the hash each proposal declares is checked (docs/context-hashing.md).
    ledger_db: Path | None = None
    # On Kafka the validator refuses to start without ledger_db, unless this says the deployment knowingly
    # has no record of tool results to check against (then a rewritten tool value with a rewritten hash
    # passes; docs/security.md).
    without_tool_receipts: bool = False
    # Longest wait for the checkpoint feed to catch up before a proposal is retried later.
    checkpoint_wait_s: float = 5.0
    checkpoint_capacity: int = 100_000
    judged_capacity: int = 10_000
    # Declared input fields per agent kind; workflows declare them, this is the fallback.
    required_inputs: dict[str, list[str]] = Field(default_factory=dict)
