"""The broker launcher lives in baton.testbed (shared with `make bench`); tests import it from here too."""

from baton.testbed.kafka_broker import REPO, KafkaBroker, fetch_kafka, free_port, start_broker

__all__ = ["REPO", "KafkaBroker", "fetch_kafka", "free_port", "start_broker"]
