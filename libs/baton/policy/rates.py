"""Sliding-window rate limits per key (an agent in a workflow, a tenant), with memory bounded however many keys."""

from __future__ import annotations

from collections import OrderedDict, deque


class SlidingWindow:
    """At most `limit` events per key in any `window_s` seconds.

    Each key keeps at most `limit` timestamps; keys are kept least-recently-used up to `max_keys` (a key
    forgotten at the bound starts afresh, which can only be generous to a key idle long enough to be the oldest).
    """

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 100_000) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"a rate limit needs limit >= 1 and window_s > 0, got {limit} per {window_s}s")
        self.limit = limit
        self.window_s = window_s
        self._max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Count an event for key at now, unless it would be over the limit (then it is not counted)."""
        times = self._events.get(key)
        if times is None:
            times = self._events[key] = deque(maxlen=self.limit)
            while len(self._events) > self._max_keys:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until key may have another event (0 when it may now)."""
        times = self._events.get(key)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - now)
