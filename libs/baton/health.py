"""Liveness, readiness and metrics of a service process, served over HTTP: `/livez` (alias `/healthz`) and
`/readyz` for Kubernetes probes, `/metrics` for Prometheus (the text exposition format)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from baton.bus.base import Subscription
from baton.telemetry import lag

log = logging.getLogger(__name__)


@dataclass
class Health:
    """What a service's probes look at: its consumers and its background loops."""

    subscriptions: Sequence[Subscription] = ()
    tasks: Sequence[asyncio.Task[None]] = ()
    stale_after_s: float = 60.0
    ready: bool = False
    started_at: float = field(default_factory=time.monotonic)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Live: every consumer polls and is not failing, and no background loop has ended."""
        now = time.monotonic()
        problems: list[str] = []
        for i, sub in enumerate(self.subscriptions):
            if not sub.healthy:
                problems.append(f"consumer {i} is failing (see the log for its traceback)")
            elif now - sub.last_poll > self.stale_after_s:
                problems.append(f"consumer {i} has not polled for {now - sub.last_poll:.0f}s")
        for task in self.tasks:
            if task.done():
                problems.append(f"background loop {task.get_name()} ended")
        return not problems, {"live": not problems, "problems": problems}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: started (state of the assigned partitions restored) and live."""
        live, detail = self.liveness()
        ok = self.ready and live
        assigned = sorted(f"{t}/{p}" for sub in self.subscriptions for t, p in sub.assigned)
        return ok, {**detail, "ready": ok, "started": self.ready, "assigned": assigned}


async def serve_health(health: Health, *, host: str = "0.0.0.0", port: int) -> asyncio.Server:
    """A minimal HTTP/1.1 server: GET /livez (/healthz) and /readyz answer 200 or 503 with a JSON body,
    /metrics the process's Prometheus metrics."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode(errors="replace").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                lag.refresh()
                exposition = generate_latest(REGISTRY)
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\nContent-Length: {len(exposition)}\r\n"
                    "Connection: close\r\n\r\n".encode()
                    + exposition
                )
                await writer.drain()
                return
            if path in ("/livez", "/healthz"):
                ok, body = health.liveness()
            elif path == "/readyz":
                ok, body = health.readiness()
            else:
                ok, body = False, {"error": f"unknown path {path!r}; use /livez, /healthz, /readyz or /metrics"}
            status = "200 OK" if ok else ("404 Not Found" if "error" in body else "503 Service Unavailable")
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("health probe dropped: %s", exc)
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)
