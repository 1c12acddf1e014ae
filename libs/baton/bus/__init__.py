"""The message bus interface and its adapters (Kafka, embedded)."""

from baton.bus.base import Bus, BusRecord, Handler, Subscription

__all__ = ["Bus", "BusRecord", "Handler", "Subscription"]
