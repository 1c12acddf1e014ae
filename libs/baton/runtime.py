"""What every service shares: runtime settings and building the bus and serializer they select."""

from __future__ import annotations

import logging
import os
import socket
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from baton.bus.base import Bus
from baton.contracts.registry import ConfluentSchemaRegistry, LocalSchemaRegistry, SchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus


class RuntimeSettings(BaseSettings):
    """Where the bus and the schema registry are; shared by every service (env prefix BATON_)."""

    model_config = SettingsConfigDict(env_prefix="BATON_", extra="ignore")

    bus: Literal["embedded", "kafka"] = "embedded"
    kafka_bootstrap: str = "127.0.0.1:9092"
    partitions: int = 4
    schema_registry_url: str | None = None
    log_level: str = "INFO"


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

        return KafkaBus(settings.kafka_bootstrap, client_id=client_id, partitions=settings.partitions)
    from baton.bus.embedded import EmbeddedBus

    return EmbeddedBus(partitions=settings.partitions)


def build_events(settings: RuntimeSettings, *, service: str, bus: Bus | None = None) -> EventBus:
    """Typed event bus for a service (reusing a bus when given, as the embedded mesh does)."""
    return EventBus(
        bus=bus or build_bus(settings, client_id=service),
        serde=AvroSerde(build_registry(settings)),
        producer=instance_id(service),
    )


def configure_logging(level: str) -> None:
    """One structured log format for every service."""
    logging.basicConfig(
        level=level.upper(),
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
    )
