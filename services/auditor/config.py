"""Settings of the auditor and of `baton audit` (env prefix BATON_AUDITOR_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.audit.keys import KEYGEN_HINT, AuditKeyError, load_public_key, load_signing_key
from baton.audit.store import AuditStore
from baton.runtime import RuntimeSettings


def _read_key_file(path: Path, setting: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise AuditKeyError(f"{setting}={path} cannot be read ({exc.strerror}); {KEYGEN_HINT}") from exc


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
    batch_size: int = 2000  # records per store append (one insert_many / one transaction)
    anchor_every: int = 1000
    # Besides every anchor_every records: an anchor once no batch came for anchor_idle_s, and at the
    # latest anchor_max_age_s after a record was stored (a trickle that never idles).
    anchor_idle_s: float = 1.0
    anchor_max_age_s: float = 30.0
    # Ed25519 private key of the auditor (base64 of the 32-byte seed), inline or in a file (a mounted secret).
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    # Ed25519 public key that `baton audit verify` trusts (base64 of 32 bytes), inline or in a file.
    verify_key: str | None = None
    verify_key_file: Path | None = None
    # Append-only JSON-lines file the auditor also publishes its anchors to (besides the bus topic).
    anchor_file: Path | None = None

    def private_key(self) -> Ed25519PrivateKey:
        """The auditor's signing key; AuditKeyError saying how to make one when none is configured."""
        if self.signing_key is not None:
            return load_signing_key(self.signing_key.get_secret_value(), source="BATON_AUDITOR_SIGNING_KEY")
        if self.signing_key_file is not None:
            text = _read_key_file(self.signing_key_file, "BATON_AUDITOR_SIGNING_KEY_FILE")
            return load_signing_key(text, source=f"BATON_AUDITOR_SIGNING_KEY_FILE={self.signing_key_file}")
        raise AuditKeyError(
            "the auditor has no signing key: it refuses to write an audit nobody can verify; "
            f"{KEYGEN_HINT}, then set BATON_AUDITOR_SIGNING_KEY_FILE to the private key file "
            "(or BATON_AUDITOR_SIGNING_KEY to its contents); `baton demo` makes an ephemeral key itself"
        )

    def public_key(self) -> Ed25519PublicKey:
        """The key verification trusts; AuditKeyError saying where to get it when none is configured."""
        if self.verify_key is not None:
            return load_public_key(self.verify_key, source="BATON_AUDITOR_VERIFY_KEY")
        if self.verify_key_file is not None:
            text = _read_key_file(self.verify_key_file, "BATON_AUDITOR_VERIFY_KEY_FILE")
            return load_public_key(text, source=f"BATON_AUDITOR_VERIFY_KEY_FILE={self.verify_key_file}")
        raise AuditKeyError(
            "verification needs the auditor's public key: set BATON_AUDITOR_VERIFY_KEY_FILE to the `.pub` file "
            "`baton audit keygen` wrote (or BATON_AUDITOR_VERIFY_KEY to its contents)"
        )

    def build_store(self, *, create: bool = True) -> AuditStore:
        """The store selected by configuration (create=False: never create a file or directory)."""
        if self.store == "mongodb":
            from baton.audit.mongo_store import MongoAuditStore

            concern: str | int = int(self.write_concern) if self.write_concern.isdigit() else self.write_concern
            return MongoAuditStore(
                self.mongodb_url, database=self.mongodb_database, write_concern=concern, journal=self.journal
            )
        from baton.audit.sqlite_store import SqliteAuditStore

        return SqliteAuditStore(self.sqlite_path, create=create)
