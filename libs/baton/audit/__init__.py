"""Tamper-evident audit: hash-chained records, signed anchors, stores, verification and lineage."""
