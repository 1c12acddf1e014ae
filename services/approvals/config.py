"""Settings of the approval service (env prefix BATON_APPROVALS_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.runtime import RuntimeSettings


class Settings(BaseSettings):
    """Approval service knobs. Reviewers come from <workflow dir>/reviewers.yaml (or reviewers_file)."""

    model_config = SettingsConfigDict(env_prefix="BATON_APPROVALS_", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    # Pending approvals, shared by every replica: embedded = SQLite at sqlite_path (one host); mongodb.
    store: Literal["embedded", "mongodb"] = "embedded"
    sqlite_path: Path = Path(".baton/approvals.db")
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    mongodb_database: str = "baton"
    # Who may decide what: names, token hashes, queues and roles.
    reviewers_file: Path | None = None
    # The demo's reviewers (public tokens, workflows/reviewers.yaml) are refused unless this says it is a demo.
    allow_demo_reviewers: bool = False
    # The reviewer page and its API (BATON_APPROVALS_HTTP_PORT); 0 = any free port, unset = not served.
    http_host: str = "127.0.0.1"
    http_port: int | None = 8480
    # How often approvals past their SLA get their fallback, and decisions not yet acknowledged are sent again.
    sweep_s: float = 1.0
    # How long an approval, once given, may be used to resume its workflow (the supervisor resumes it at once).
    token_ttl_s: float = 86_400.0
    # Signs the reviewer page's session cookies; replicas behind one load balancer share it (unset: random per
    # process, so a page signed in on one replica signs in again on another).
    session_secret: SecretStr | None = None
