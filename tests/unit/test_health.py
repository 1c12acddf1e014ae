"""Liveness and readiness probes of a service process."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from baton.health import Health, serve_health


@dataclass
class FakeSubscription:
    healthy: bool = True
    last_poll: float = field(default_factory=time.monotonic)
    assigned: frozenset[tuple[str, int]] = frozenset({("baton.tasks", 0)})

    def lag(self) -> dict[tuple[str, int], int]:
        return {("baton.tasks", 0): 3}

    async def stop(self) -> None:
        return None

    async def kill(self) -> None:
        return None


async def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_probes_say_ready_only_after_start_and_not_live_when_a_consumer_fails() -> None:
    sub = FakeSubscription()
    health = Health(subscriptions=[sub])
    server = await serve_health(health, host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await _get(port, "/livez"))[0] == 200
        status, body = await _get(port, "/readyz")
        assert status == 503 and body["started"] is False  # partitions not restored yet
        health.ready = True
        status, body = await _get(port, "/readyz")
        assert status == 200 and body["assigned"] == ["baton.tasks/0"]
        sub.healthy = False
        status, body = await _get(port, "/livez")
        assert status == 503 and "consumer 0 is failing" in str(body["problems"])
        sub.healthy, sub.last_poll = True, time.monotonic() - 3600
        status, body = await _get(port, "/livez")
        assert status == 503 and "has not polled" in str(body["problems"])
        sub.last_poll = time.monotonic()
        loop = asyncio.create_task(asyncio.sleep(0), name="retry-loop")
        await loop
        health.tasks = [loop]
        status, body = await _get(port, "/livez")
        assert status == 503 and "retry-loop ended" in str(body["problems"])
        assert (await _get(port, "/nope"))[0] == 404
    finally:
        server.close()
        await server.wait_closed()


async def test_healthz_is_liveness_and_metrics_parse_with_the_lag_of_each_watched_member() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from baton.telemetry import lag

    sub = FakeSubscription()
    lag.watch("baton.test-group", sub)
    server = await serve_health(Health(subscriptions=[sub]), host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await _get(port, "/healthz"))[0] == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.split()[1] == b"200" and b"text/plain" in head
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        lags = {
            (s.labels["group"], s.labels["topic"], s.labels["partition"]): s.value
            for s in families["baton_consumer_lag_messages"].samples
        }
        assert lags[("baton.test-group", "baton.tasks", "0")] == 3
        assert "baton_workflow_outcomes" in families and "baton_dead_letters" in families
    finally:
        server.close()
        await server.wait_closed()
