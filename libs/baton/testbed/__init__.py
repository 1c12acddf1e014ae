"""The real servers Baton runs against, started from a checkout: a Kafka broker (KRaft) from Maven Central jars,
FerretDB (the MongoDB wire protocol) built from the Go module proxy, and service processes.

Shared by the test harness (tests/harness re-exports them) and `make bench`, which must not import tests/.
"""
