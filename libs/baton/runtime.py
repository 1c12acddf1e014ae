"""What every service shares: runtime settings and building the bus and serializer they select."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.bus.base import Bus
from baton.contracts.registry import ConfluentSchemaRegistry, LocalSchemaRegistry, SchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.identity import KEYRING_FILE, Trust, load_trust, role_of_service
from baton.messaging import EventBus
from baton.telemetry.tracing import tracer_for


class RuntimeSettings(BaseSettings):
    """Where the bus and the schema registry are; shared by every service (env prefix BATON_)."""

    model_config = SettingsConfigDict(env_prefix="BATON_", extra="ignore")

    bus: Literal["embedded", "kafka"] = "embedded"
    kafka_bootstrap: str = "127.0.0.1:9092"
    partitions: int = 4
    # How long the Kafka producer waits to fill a batch (BATON_KAFKA_LINGER_MS). Records published while a
    # request is in flight are batched anyway, so 0 costs no throughput under load and no latency at rest.
    kafka_linger_ms: int = 0
    schema_registry_url: str | None = None
    log_level: str = "INFO"
    # Port of /livez (/healthz), /readyz and /metrics (BATON_HEALTH_PORT); unset: no health server.
    health_port: int | None = None
    # Prometheus metrics (BATON_METRICS); off, every metric update is skipped. Traces follow the OTEL_* variables.
    metrics: bool = True
    # This process's Ed25519 signing key: a base64 seed (BATON_SIGNING_KEY, e.g. from a secret), or a file
    # holding one (BATON_SIGNING_KEY_FILE, a mounted secret), or <BATON_KEYS_DIR>/<role>.key.
    signing_key: str | None = None
    signing_key_file: Path | None = None
    keys_dir: Path | None = None
    # The public keyring (BATON_KEYRING); default <BATON_KEYS_DIR>/keyring.json, else the keyring.json shipped
    # with the workflow declarations (BATON_WORKFLOW_DIR).
    keyring: Path | None = None

    @field_validator("signing_key", "signing_key_file", "keys_dir", "keyring", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class ServiceConfigError(ValueError):
    """A service's configuration would leave it running without a check it must make; the message says
    what to set."""


def instance_id(service: str) -> str:
    """Producer identity of this process: service@host/pid."""
    return f"{service}@{socket.gethostname()}/{os.getpid()}"


def build_registry(settings: RuntimeSettings) -> SchemaRegistry:
    """Confluent registry when a URL is configured, the local schema files otherwise."""
    if settings.schema_registry_url:
        return ConfluentSchemaRegistry(settings.schema_registry_url)
    return LocalSchemaRegistry()


def build_bus(settings: RuntimeSettings, *, client_id: str) -> Bus:
    """The bus selected by configuration."""
    if settings.bus == "kafka":
        from baton.bus.kafka import KafkaBus

        return KafkaBus(
            settings.kafka_bootstrap,
            client_id=client_id,
            partitions=settings.partitions,
            linger_ms=settings.kafka_linger_ms,
        )
    from baton.bus.embedded import EmbeddedBus

    return EmbeddedBus(partitions=settings.partitions)


def build_trust(settings: RuntimeSettings, *, role: str) -> Trust:
    """This process's identity (to sign) and the keyring (to check others), from configuration.

    The keyring is BATON_KEYRING, else the keys directory's, else the one shipped with the workflow
    declarations (`<workflow dir>/keyring.json`), when there is one.
    """
    keyring = settings.keyring
    if keyring is None and settings.keys_dir is None:
        from baton.workflows import WorkflowDeclarationError, default_workflow_dir

        try:
            shipped = default_workflow_dir() / KEYRING_FILE
        except WorkflowDeclarationError:
            shipped = None
        keyring = shipped if shipped is not None and shipped.is_file() else None
    return load_trust(
        role,
        signing_key=settings.signing_key,
        signing_key_file=settings.signing_key_file,
        keys_dir=settings.keys_dir,
        keyring_path=keyring,
    )


def build_events(
    settings: RuntimeSettings, *, service: str, bus: Bus | None = None, trust: Trust | None = None
) -> EventBus:
    """Typed event bus for a service (reusing a bus and identity when given, as the embedded mesh does)."""
    if trust is None:
        trust = build_trust(settings, role=role_of_service(service))
    if bus is None:
        bus = build_bus(settings, client_id=service)
    return EventBus(
        bus=bus,
        serde=AvroSerde(build_registry(settings)),
        producer=instance_id(service),
        trust=trust,
        tracer=tracer_for(service),
    )


async def keep_running(
    name: str, loop: Callable[[], Awaitable[None]], *, backoff: tuple[float, float] = (0.1, 5.0)
) -> None:
    """Run a service's background loop for good: an exception is logged and the loop restarted after a
    growing pause, so a failure is visible and never ends the loop silently; only cancellation stops it."""
    delay, cap = backoff
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logging.getLogger(__name__).exception("%s failed; restarting it in %.1fs", name, delay)
            await asyncio.sleep(delay)
            delay = min(cap, delay * 2)


class KeyedLocks:
    """One asyncio lock per key (e.g. per workflow), held only while someone uses it, so memory stays
    bounded by what is in flight, not by how many keys were ever seen."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Exclusive use of key until the block ends."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]
