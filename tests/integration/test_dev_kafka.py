"""`baton dev kafka`, the guide's local broker: it serves Kafka on the port asked for and stops with its broker."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

import pytest

from baton.bus.kafka import KafkaBus
from tests.harness.guide import wait_for_port
from tests.harness.kafka_broker import fetch_kafka, free_port

pytestmark = pytest.mark.integration


async def _round_trip(bootstrap: str) -> int:
    bus = KafkaBus(bootstrap, client_id="dev-kafka-test")
    await bus.start()
    try:
        await bus.create_topics(["dev.kafka.check"])
        await bus.publish("dev.kafka.check", b"hello", key=b"k")
        return sum((await bus.end_offsets("dev.kafka.check")).values())
    finally:
        await bus.stop()


def test_baton_dev_kafka_serves_a_broker_until_sigterm() -> None:
    fetch_kafka()  # cached by `make kafka`; fetched here otherwise, outside the start-up wait below
    port = free_port()
    argv = [sys.executable, "-m", "baton", "dev", "kafka", "--port", str(port)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout_s=120, alive=proc)
        assert asyncio.run(_round_trip(f"127.0.0.1:{port}")) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"at 127.0.0.1:{port}" in err.decode()
    with pytest.raises(OSError):  # the broker went with it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
