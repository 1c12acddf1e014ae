"""The message bus interface and its adapters (Kafka, embedded)."""

from baton.bus.base import BatchHandler, Bus, BusRecord, Handler, Subscription

__all__ = ["BatchHandler", "Bus", "BusRecord", "Handler", "Subscription"]
