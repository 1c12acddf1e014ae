"""The Confluent REST registry client, against a local server speaking that API's subset we use."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from baton.contracts.models import ControlAction, ControlCommand, ControlScope, Envelope
from baton.contracts.registry import ConfluentSchemaRegistry, SchemaRegistryError
from baton.contracts.serde import AvroSerde, DecodeError


class RegistryServer:
    """POST /subjects/{s}/versions and GET /schemas/ids/{id}, with 409 for a subject marked incompatible."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.ids: dict[str, int] = {}
        self.refuse: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                server.requests.append(("POST", self.path, self.headers.get("Content-Type")))
                subject = self.path.split("/")[2]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if subject in server.refuse:
                    self._send(409, {"error_code": 409, "message": "Schema being registered is incompatible"})
                    return
                schema = body["schema"]
                sid = server.ids.setdefault(schema, len(server.ids) + 1)
                server.schemas[sid] = schema
                self._send(200, {"id": sid})

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path, None))
                sid = int(self.path.rsplit("/", 1)[1])
                if sid not in server.schemas:
                    self._send(404, {"error_code": 40403, "message": "Schema not found"})
                    return
                self._send(200, {"schema": server.schemas[sid]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def registry_server() -> Iterator[RegistryServer]:
    server = RegistryServer()
    yield server
    server.httpd.shutdown()


def _command() -> ControlCommand:
    return ControlCommand(
        envelope=Envelope(workflow_id="wf", tenant_id="t", producer="p"),
        command=ControlAction.HALT,
        scope=ControlScope.ALL,
        reason="test",
        issued_by="op",
    )


async def test_events_round_trip_through_a_confluent_registry(registry_server: RegistryServer) -> None:
    producer = AvroSerde(ConfluentSchemaRegistry(registry_server.url))
    data = await producer.encode(_command())
    await producer.encode(_command())
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1
    posts = [r for r in registry_server.requests if r[0] == "POST"]
    assert posts == [
        ("POST", "/subjects/io.baton.events.ControlCommand/versions", "application/vnd.schemaregistry.v1+json")
    ]  # registered once, then cached
    consumer = AvroSerde(ConfluentSchemaRegistry(registry_server.url))  # a different process: fetches by id
    decoded = await consumer.decode(data)
    assert isinstance(decoded, ControlCommand)
    assert decoded.reason == "test" and decoded.envelope.event_type == "ControlCommand"
    assert ("GET", "/schemas/ids/1", None) in registry_server.requests


async def test_registry_errors_are_explicit(registry_server: RegistryServer) -> None:
    registry_server.refuse.add("io.baton.events.ControlCommand")
    with pytest.raises(SchemaRegistryError, match="409"):
        await AvroSerde(ConfluentSchemaRegistry(registry_server.url)).encode(_command())
    with pytest.raises(DecodeError) as info:
        await AvroSerde(ConfluentSchemaRegistry(registry_server.url)).decode(b"\x00\x00\x00\x00\x63payload")
    assert info.value.code == "UNKNOWN_SCHEMA_ID"
    with pytest.raises(DecodeError) as info:
        await AvroSerde(ConfluentSchemaRegistry("http://127.0.0.1:9")).decode(b"\x00\x00\x00\x00\x63payload")
    assert info.value.code == "REGISTRY_UNAVAILABLE"
