"""Baton's event contracts: Avro schemas, typed models, the serializer and the registries."""
