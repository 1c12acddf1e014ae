"""End-to-end modules each get a broker of their own, so the mesh's fixed topic names start empty."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.kafka_broker import KafkaBroker, start_broker


@pytest.fixture(scope="module")
def own_broker() -> Iterator[KafkaBroker]:
    broker = start_broker()
    try:
        yield broker
    finally:
        broker.stop()
