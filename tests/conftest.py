"""Session fixtures: the real Kafka broker is started once, only when a selected test needs it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from tests.harness.kafka_broker import KafkaBroker, start_broker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A real Apache Kafka broker (KRaft) started for this session, or BATON_TEST_KAFKA_BOOTSTRAP's."""
    external = os.environ.get("BATON_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield KafkaBroker(libs=Path("."), workdir=Path("."), port=int(external.rpartition(":")[2]))
        return
    broker = start_broker()
    print(f"\n[baton] started real Apache Kafka {broker.version} (KRaft, single node) at {broker.bootstrap}; "
          f"broker log: {broker.log_path}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
async def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """Bootstrap address of the broker, once it answers a cluster description."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        info = await admin.describe_cluster()
    finally:
        await admin.close()
    print(f"[baton] Kafka {kafka_broker.version} answered: cluster id {info['cluster_id']}, "
          f"broker ids {[b['node_id'] for b in info['brokers']]}")
    return kafka_broker.bootstrap


@pytest.fixture
def serde() -> AvroSerde:
    return AvroSerde(LocalSchemaRegistry())


@pytest.fixture
def unique() -> str:
    """A unique suffix for topic and group names, so tests never share state."""
    return uuid.uuid4().hex[:10]
