"""Settings of the auditor and of `baton audit` (env prefix BATON_AUDITOR_)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.audit.store import AuditStore
from baton.runtime import RuntimeSettings

DEV_KEY = "baton-development-key-change-me"
log = logging.getLogger(__name__)


class Settings(BaseSettings):
    """Where the audit goes and how it is sealed."""

    model_config = SettingsConfigDict(env_prefix="BATON_AUDITOR_", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    store: Literal["embedded", "mongodb"] = "embedded"
    sqlite_path: Path = Path(".baton/audit.db")
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    mongodb_database: str = "baton"
    write_concern: str = "majority"
    journal: bool = True
    batch_size: int = 500
    anchor_every: int = 1000
    signing_key: str = DEV_KEY

    @property
    def key(self) -> bytes:
        if self.signing_key == DEV_KEY:
            log.warning("BATON_AUDITOR_SIGNING_KEY is not set: the audit is sealed with the development key")
        return self.signing_key.encode()

    def build_store(self) -> AuditStore:
        """The store selected by configuration."""
        if self.store == "mongodb":
            from baton.audit.mongo_store import MongoAuditStore

            concern: str | int = int(self.write_concern) if self.write_concern.isdigit() else self.write_concern
            return MongoAuditStore(
                self.mongodb_url, database=self.mongodb_database, write_concern=concern, journal=self.journal
            )
        from baton.audit.sqlite_store import SqliteAuditStore

        return SqliteAuditStore(self.sqlite_path)
