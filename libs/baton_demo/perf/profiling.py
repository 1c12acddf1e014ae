"""Where the time goes: cProfile of the Baton side of a figure, its top functions by cumulative and self time."""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# Functions of these trees are Baton's side; the rest (asyncio, aiokafka, pymongo, sqlite3) is shown by callers.
_BATON = ("/libs/baton/", "/services/")
_BENCH = "/libs/baton_demo/perf/"  # the bench's own driving code is not Baton's side


@dataclass(frozen=True)
class Profile:
    what: str
    total_s: float
    baton_self_s: float
    by_cumulative: list[dict[str, Any]]
    by_self: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "total_s": self.total_s,
            "baton_self_s": self.baton_self_s,
            "by_cumulative": self.by_cumulative,
            "by_self": self.by_self,
        }


def _short(path: str) -> str:
    for marker in _BATON:
        if marker in path:
            return path[path.index(marker) :].removeprefix("/libs/").removeprefix("/")
    return path


def _rows(stats: pstats.Stats, index: int, top: int) -> list[dict[str, Any]]:
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    mine = [(k, v) for k, v in raw.items() if any(part in k[0] for part in _BATON) and _BENCH not in k[0]]
    mine.sort(key=lambda kv: kv[1][index], reverse=True)
    return [
        {
            "function": f"{_short(k[0])}:{k[1]}({k[2]})",
            "calls": v[1],
            "self_s": round(v[2], 4),
            "cumulative_s": round(v[3], 4),
        }
        for k, v in mine[:top]
    ]


async def profiled(what: str, run: Callable[[], Awaitable[Any]], *, top: int = 15) -> Profile:
    """Run the coroutine under cProfile (this thread: the event loop, where Baton's handlers run)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await run()
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    own = sum(v[2] for k, v in raw.items() if any(p in k[0] for p in _BATON) and _BENCH not in k[0])
    total = float(stats.total_tt)  # type: ignore[attr-defined]
    return Profile(what, total, own, _rows(stats, 3, top), _rows(stats, 2, top))
