"""The message bus interface and its adapters (Kafka, embedded)."""

from baton.bus.base import (
    MAX_MESSAGE_BYTES,
    BatchHandler,
    Bus,
    BusRecord,
    BusUnavailableError,
    Handler,
    MessageTooLargeError,
    PartitionsCallback,
    Subscription,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "BatchHandler",
    "Bus",
    "BusRecord",
    "BusUnavailableError",
    "Handler",
    "MessageTooLargeError",
    "PartitionsCallback",
    "Subscription",
]
