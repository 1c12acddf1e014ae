"""Session fixtures: the real Kafka broker is started once, only when a selected test needs it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from baton.bus.base import Bus
from baton.bus.embedded import EmbeddedBus
from baton.bus.kafka import KafkaBus
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from tests.harness.ferretdb import start_ferretdb
from tests.harness.kafka_broker import KafkaBroker, start_broker


def _say(config: pytest.Config, line: str) -> None:
    """Print past pytest's capture, so the log shows which broker served the tests."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        print(line, flush=True)


@pytest.fixture(scope="session")
def kafka_broker(pytestconfig: pytest.Config) -> Iterator[KafkaBroker]:
    """A real Apache Kafka broker (KRaft) started for this session, or BATON_TEST_KAFKA_BOOTSTRAP's."""
    external = os.environ.get("BATON_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield KafkaBroker(libs=Path("."), workdir=Path("."), port=int(external.rpartition(":")[2]))
        return
    broker = start_broker()
    _say(
        pytestconfig,
        f"\n[baton] started real Apache Kafka {broker.version} (KRaft, single node) at {broker.bootstrap}; "
        f"broker log: {broker.log_path}",
    )
    try:
        yield broker
    finally:
        broker.stop()


async def _describe(bootstrap: str) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        info: dict[str, Any] = await admin.describe_cluster()
        return info
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker, pytestconfig: pytest.Config) -> str:
    """Bootstrap address of the broker, once it answers a cluster description."""
    # A thread of its own, so this works whether or not the caller runs in an event loop.
    with ThreadPoolExecutor(1) as pool:
        info = pool.submit(asyncio.run, _describe(kafka_broker.bootstrap)).result()
    _say(
        pytestconfig,
        f"[baton] Kafka {kafka_broker.version} answered: cluster id {info['cluster_id']}, "
        f"broker ids {[b['node_id'] for b in info['brokers']]}",
    )
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def mongodb_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """A MongoDB wire-protocol server (FerretDB on SQLite) for this session, or BATON_TEST_MONGODB_URL's."""
    external = os.environ.get("BATON_TEST_MONGODB_URL")
    if external:
        yield external
        return
    server = start_ferretdb()
    _say(
        pytestconfig,
        f"[baton] started FerretDB {server.version} (MongoDB wire protocol, SQLite backend) at {server.url}",
    )
    try:
        yield server.url
    finally:
        server.stop()


PARTITIONS = 4


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.integration)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """Each adapter in turn: the embedded bus, then Kafka on the real broker."""
    b: Bus
    if request.param == "kafka":
        b = KafkaBus(request.getfixturevalue("kafka_bootstrap"), client_id="test", partitions=PARTITIONS)
    else:
        b = EmbeddedBus(partitions=PARTITIONS)
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
def serde() -> AvroSerde:
    return AvroSerde(LocalSchemaRegistry())


@pytest.fixture
def unique() -> str:
    """A unique suffix for topic and group names, so tests never share state."""
    return uuid.uuid4().hex[:10]
