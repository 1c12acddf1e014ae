"""Settings of the supervisor (env prefix BATON_SUPERVISOR_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.anomaly import AnomalySettings
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
    # Task admission (baton.policy.admission): tenants from tenants_file (default: tenants.yaml beside the
    # workflows); a task of an unknown or inactive tenant, naming another tenant's record, over its tenant's
    # tasks_per_minute, or of a tenant whose day's spend is at 100 % is halted before any step runs.
    # On by default; a workflow directory without tenants.yaml is a single-tenant deployment (nothing to admit).
    admission: bool = True
    tenants_file: Path | None = None
    # The guard's spend accounts, read to reject tasks of a tenant at 100 % (none: that rule is off).
    spend_store: Literal["none", "embedded", "mongodb"] = "embedded"
    spend_sqlite_path: Path = Path(".baton/spend.db")
    spend_mongodb_url: str = "mongodb://127.0.0.1:27017/"
    spend_mongodb_database: str = "baton"
    spend_refresh_s: float = 5.0
    # A step whose action needs a human waits, checkpointed, for the approval service's decision and resumes on it
    # (docs/decisions/0020-approvals.md). A deployment without the approval service sets this false: such a
    # workflow then ends escalated APPROVAL_REQUIRED to its queue, as nobody would ever decide it. Unset: on when
    # the declarations hold reviewers.yaml (the approval service's reviewers), else off.
    await_approvals: bool | None = None
    # Behaviour anomalies (baton.anomaly, docs/observability.md): each agent kind's steps against the baseline learned
    # from its own past steps. Each anomaly is published (AgentAnomaly) and counted; with anomaly_action "halt", one
    # of a kind in anomaly_halt_on also halts the workflow it was seen in (ANOMALY), before its next step is asked.
    anomaly_detection: bool = True
    anomaly_action: Literal["flag", "halt"] = "flag"
    anomaly_halt_on: tuple[str, ...] = ("burst", "sequence")
    anomaly_warmup_steps: int = 50
    anomaly_burst_z: float = 6.0
    anomaly_drift_ratio: float = 0.25
    anomaly_sequence_min_share: float = 0.002

    def anomaly_settings(self) -> AnomalySettings:
        return AnomalySettings(
            warmup_steps=self.anomaly_warmup_steps,
            burst_z=self.anomaly_burst_z,
            drift_ratio=self.anomaly_drift_ratio,
            sequence_min_share=self.anomaly_sequence_min_share,
        )
