"""Awaitable collectors for tests: wait for what a handler receives instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Collector(Generic[T]):
    """Appends items and lets a test await a condition on them."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Condition()

    async def add(self, item: T) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[list[T]], bool], within: float = 30.0) -> list[T]:
        """Wait until predicate(items) holds; fails the test with what arrived on timeout."""

        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.items))

        try:
            await asyncio.wait_for(_wait(), within)
        except TimeoutError:
            raise AssertionError(
                f"condition not met within {within}s; got {len(self.items)} items: {self.items[:10]!r}"
            ) from None
        return self.items

    async def wait_for_count(self, n: int, within: float = 30.0) -> list[T]:
        return await self.wait_until(lambda items: len(items) >= n, within)
