"""Settings of an agent service (env prefix BATON_AGENT_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.handoff import DEFAULT_MAX_CONTEXT_BYTES
from baton.runtime import RuntimeSettings


class Settings(BaseSettings):
    """One agent kind's knobs."""

    model_config = SettingsConfigDict(env_prefix="BATON_AGENT_", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    kind: str = Field(default="", description="agent kind this process serves, e.g. identity_verification")
    # Baton's own record of steps, tool calls by idempotency key and tool receipts (the validator reads them).
    ledger_db: Path = Path(".baton/ledger.db")
    # Python modules of @python_tool functions, comma-separated (BATON_AGENT_TOOLS=acme_tools,acme.billing),
    # on top of the tool pack beside the workflow declarations (tools.yaml).
    tools: str = ""
    # The tool pack file; default: tools.yaml in the workflow directory (BATON_WORKFLOW_DIR).
    tool_pack: Path | None = None
    # The model when the agent's declaration names none; a declared model always wins. The key is only ever here.
    backend: Literal["scripted", "openai"] = "scripted"
    seed: int = 0
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "gpt-4o-mini"
    openai_api_key: str = ""
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
    # How long a tool call waits for the policy guard's verdict before the step is retried later (nothing runs).
    guard_timeout_s: float = 30.0

    def tool_modules(self) -> list[str]:
        return [m.strip() for m in self.tools.split(",") if m.strip()]
