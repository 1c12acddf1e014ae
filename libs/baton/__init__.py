"""Baton: a Kafka-native runtime for multi-agent workflows."""

__version__ = "0.1.0"
