"""The one serializer: typed events <-> Avro in Confluent's wire format (magic byte + 4-byte schema id)."""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro
from pydantic import ValidationError

from baton.contracts.catalogue import Catalogue, Schema, default_catalogue, subject_of
from baton.contracts.models import EVENT_MODELS, Event
from baton.contracts.registry import SchemaRegistry, SchemaRegistryError, UnknownSchemaIdError

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """A message could not be turned into an event; `code` is machine-readable."""

    def __init__(self, code: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class AvroSerde:
    """Encodes events with the newest local schema and decodes any registered version into the newest model."""

    def __init__(self, registry: SchemaRegistry, catalogue: Catalogue | None = None) -> None:
        self._registry = registry
        self._catalogue = catalogue or default_catalogue()
        self._models = {subject_of(m.avro_name): m for m in EVENT_MODELS}
        self._write_ids: dict[str, int] = {}
        self._parsed_by_id: dict[int, tuple[Any, str, bool]] = {}
        self._reader: dict[str, Any] = {}
        for subject in self._models:
            latest = self._catalogue.latest(subject)
            self._reader[subject] = fastavro.parse_schema(latest.inlined)

    async def encode(self, event: Event) -> bytes:
        """Avro-encode an event, stamping its envelope with its type and schema version."""
        subject = subject_of(event.avro_name)
        latest = self._catalogue.latest(subject)
        schema_id = self._write_ids.get(subject)
        if schema_id is None:
            schema_id = await self._registry.register(subject, latest.inlined)
            self._write_ids[subject] = schema_id
        datum = event.model_dump()
        datum["envelope"].update(event_type=event.event_type, schema_version=latest.version)
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC_BYTE, schema_id))
        fastavro.schemaless_writer(buf, self._reader[subject], datum)
        return buf.getvalue()

    async def _writer_schema(self, schema_id: int) -> tuple[Any, str, bool]:
        cached = self._parsed_by_id.get(schema_id)
        if cached is not None:
            return cached
        try:
            schema: Schema = await self._registry.schema_by_id(schema_id)
        except UnknownSchemaIdError as exc:
            raise DecodeError("UNKNOWN_SCHEMA_ID", str(exc)) from exc
        except SchemaRegistryError as exc:
            raise DecodeError("REGISTRY_UNAVAILABLE", str(exc), transient=True) from exc
        try:
            name = schema["name"] if "." in schema["name"] else f"{schema.get('namespace', '')}.{schema['name']}"
            subject = subject_of(name)
            newest = subject in self._reader and schema == self._catalogue.latest(subject).inlined
            parsed = (fastavro.parse_schema(schema), subject, newest)
        except Exception as exc:  # not a record schema, or not Avro at all: the message is not a Baton event
            raise DecodeError(
                "UNSUPPORTED_SCHEMA",
                f"schema id {schema_id} is not an Avro record schema ({type(exc).__name__}: {exc}); "
                "the message is not a Baton event",
            ) from exc
        self._parsed_by_id[schema_id] = parsed
        return parsed

    async def decode(self, data: bytes) -> Event:
        """Decode a message; raises DecodeError saying what was wrong and what to do."""
        if len(data) < _HEADER.size:
            raise DecodeError(
                "TOO_SHORT",
                f"message is {len(data)} bytes, shorter than the 5-byte Confluent header; "
                "the producer must write Avro in Confluent's wire format (baton.client does)",
            )
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise DecodeError(
                "BAD_MAGIC_BYTE",
                f"first byte is 0x{data[0]:02x}, not the Confluent magic byte 0x00; the message is not "
                "Avro in Confluent's wire format: publish through baton.client or a Confluent Avro serializer",
            )
        writer, subject, newest = await self._writer_schema(schema_id)
        model = self._models.get(subject)
        if model is None:
            raise DecodeError(
                "UNKNOWN_EVENT_TYPE",
                f"schema id {schema_id} is {subject}, which is not a Baton event this service understands",
            )
        reader = self._reader[subject]
        buf = io.BytesIO(data)
        buf.seek(_HEADER.size)
        try:
            datum = fastavro.schemaless_reader(buf, writer, None if newest else reader)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise DecodeError(
                "AVRO_DECODE",
                f"payload does not decode as {subject} (schema id {schema_id}): {type(exc).__name__}: {exc}",
            ) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                "TRAILING_BYTES",
                f"{len(data) - buf.tell()} bytes left after decoding {subject}: the payload is corrupt or "
                "was written with a different schema than its id says",
            )
        try:
            return model.model_validate(datum)
        except ValidationError as exc:
            raise DecodeError("SCHEMA_INVALID", f"{subject} fails validation: {exc}") from exc
