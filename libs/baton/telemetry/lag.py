"""Consumer lag per group and partition, read from the subscriptions of this process when `/metrics` is
scraped (so it costs nothing between scrapes) into `baton_consumer_lag_messages`."""

from __future__ import annotations

import threading
import weakref

from baton.bus.base import Subscription
from baton.telemetry import metrics

_lock = threading.Lock()
_watched: list[tuple[str, weakref.ReferenceType[Subscription]]] = []
_shown: set[tuple[str, str, str]] = set()


def watch(group: str, subscription: Subscription) -> None:
    """Report this group member's lag from now on (until it is garbage-collected)."""
    with _lock:
        _watched.append((group, weakref.ref(subscription)))


def refresh() -> None:
    """Set the lag gauge from every live subscription; partitions no longer owned here are removed from it."""
    with _lock:
        _watched[:] = [(group, ref) for group, ref in _watched if ref() is not None]
        watched = [(group, sub) for group, ref in _watched if (sub := ref()) is not None]
    now: dict[tuple[str, str, str], int] = {}
    for group, sub in watched:
        for (topic, partition), lag in sub.lag().items():
            labels = (group, topic, str(partition))
            now[labels] = now.get(labels, 0) + lag
    for labels in _shown - now.keys():
        metrics.CONSUMER_LAG.remove(*labels)
    for labels, lag in now.items():
        metrics.CONSUMER_LAG.labels(*labels).set(lag)
    _shown.clear()
    _shown.update(now)
