"""Schema registries: Confluent's REST API for production, the local schema files for embedded mode."""

from __future__ import annotations

import json
from typing import Protocol

import httpx

from baton.contracts.catalogue import Catalogue, Schema, default_catalogue, schema_id_of


class UnknownSchemaIdError(LookupError):
    """No schema is registered under an id read from a message."""


class SchemaRegistryError(RuntimeError):
    """The registry refused a request or could not be reached."""


class SchemaRegistry(Protocol):
    """Where schema ids come from."""

    async def register(self, subject: str, schema: Schema) -> int:
        """Register (or look up) a schema under a subject; returns its id."""
        ...

    async def schema_by_id(self, schema_id: int) -> Schema:
        """The schema registered under an id; raises UnknownSchemaIdError."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LocalSchemaRegistry:
    """Registry backed by the schema files: ids are a stable hash of each schema's canonical form."""

    def __init__(self, catalogue: Catalogue | None = None) -> None:
        self._catalogue = catalogue or default_catalogue()
        self._extra: dict[int, Schema] = {}

    async def register(self, subject: str, schema: Schema) -> int:
        schema_id = schema_id_of(schema)
        if schema_id not in self._catalogue.by_id:
            self._extra[schema_id] = schema
        return schema_id

    async def schema_by_id(self, schema_id: int) -> Schema:
        known = self._catalogue.by_id.get(schema_id)
        if known is not None:
            return known.inlined
        if schema_id in self._extra:
            return self._extra[schema_id]
        raise UnknownSchemaIdError(
            f"schema id {schema_id} is not among the {len(self._catalogue.by_id)} schemas under "
            f"{self._catalogue.root}; the producer used a schema this deployment does not have: "
            "upgrade the consumer's schemas or use the shared schema registry"
        )

    async def close(self) -> None:
        return None


class ConfluentSchemaRegistry:
    """Client of a schema registry speaking the Confluent REST API (Confluent, Karapace, Apicurio)."""

    _CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

    def __init__(self, url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Schema] = {}

    async def register(self, subject: str, schema: Schema) -> int:
        text = json.dumps(schema, sort_keys=True)
        cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        try:
            resp = await self._client.post(
                f"{self._url}/subjects/{subject}/versions",
                content=json.dumps({"schema": text}),
                headers={"Content-Type": self._CONTENT_TYPE},
            )
        except httpx.HTTPError as exc:
            raise SchemaRegistryError(f"schema registry at {self._url} unreachable: {exc}") from exc
        if resp.status_code >= 400:
            raise SchemaRegistryError(
                f"schema registry refused {subject}: HTTP {resp.status_code} {resp.text[:300]} "
                "(409 means the new version breaks the subject's compatibility rule)"
            )
        schema_id = int(resp.json()["id"])
        self._ids[(subject, text)] = schema_id
        self._schemas[schema_id] = schema
        return schema_id

    async def schema_by_id(self, schema_id: int) -> Schema:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        try:
            resp = await self._client.get(f"{self._url}/schemas/ids/{schema_id}")
        except httpx.HTTPError as exc:
            raise SchemaRegistryError(f"schema registry at {self._url} unreachable: {exc}") from exc
        if resp.status_code == 404:
            raise UnknownSchemaIdError(f"schema id {schema_id} is not registered at {self._url}")
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise SchemaRegistryError(f"schema registry error for id {schema_id}: HTTP {resp.status_code}")
        if resp.status_code >= 400:
            # The registry answered: the id is not something this client may read. Final, not an outage.
            raise UnknownSchemaIdError(f"schema id {schema_id}: the registry answered HTTP {resp.status_code}")
        try:
            body = resp.json()
            schema: Schema = json.loads(body["schema"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UnknownSchemaIdError(
                f"schema id {schema_id} is registered, but not as an Avro schema Baton can read ({exc}); "
                "it belongs to another producer of the registry"
            ) from exc
        self._schemas[schema_id] = schema
        return schema

    async def close(self) -> None:
        await self._client.aclose()
