"""Sliding-window rate limits per key: at most `limit` events in any `window_s` seconds.

Used for per-tenant task admission (tasks per minute) and by the guard for per-agent tool-call rates (the
field's example: more than 50 calls in 60 s halts).

A key's window is the times of its allowed events, oldest first, so `allow` is exact (no fixed-bucket edge
where twice the limit passes around a boundary) and costs amortised O(1). Memory is bounded however many keys
come: each window holds at most `limit` times, and at most `max_keys` keys are kept, least recently used
dropped first. Dropping a key forgets its recent events, so its next events are allowed as if it were new;
with `max_keys` well above the keys active within one window (tenants, agents) that never happens to a key
that is still near its limit. Keys whose whole window lies in the past are dropped first, as they are seen.
"""

from __future__ import annotations

from collections import OrderedDict, deque

DEFAULT_MAX_KEYS = 100_000


class SlidingWindowLimiter:
    """At most `limit` allowed events per key in any `window_s` seconds (one limit for every key)."""

    def __init__(self, limit: int, window_s: float, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if limit < 0 or window_s <= 0 or max_keys < 1:
            raise ValueError("a rate limit needs limit >= 0, window_s > 0 and max_keys >= 1")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._windows: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """How many keys are held."""
        return len(self._windows)

    def _window(self, key: str, now: float) -> deque[float]:
        times = self._windows.get(key)
        if times is None:
            times = deque()
            self._windows[key] = times
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def allow(self, key: str, now: float, *, limit: int | None = None) -> bool:
        """Count one event of `key` at `now` and say whether it is within the limit (`limit` overrides the
        limiter's own for this key, e.g. a tenant's tasks_per_minute); a refused event is not counted."""
        cap = self.limit if limit is None else limit
        times = self._window(key, now)
        if len(times) >= cap:
            return False
        times.append(now)
        return True

    def retry_after_s(self, key: str, now: float, *, limit: int | None = None) -> float:
        """Seconds until `key` may have one more event (0: now; inf: never, its limit is 0)."""
        cap = self.limit if limit is None else limit
        if cap <= 0:
            return float("inf")
        times = self._windows.get(key)
        if times is None:
            return 0.0
        live = [t for t in times if t > now - self.window_s]
        if len(live) < cap:
            return 0.0
        # The oldest event that keeps the window full leaves it window_s after it happened.
        return max(0.0, live[len(live) - cap] + self.window_s - now)
