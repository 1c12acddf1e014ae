"""Alternating A/B repetitions and what is reported of them: min, median, max and the ratio of medians."""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Series:
    """Repeated measurements of one side, in one unit."""

    samples: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def as_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "min": self.min, "median": self.median, "max": self.max}


@dataclass
class Comparison:
    """One row of the report: Baton's side against its baseline, both measured in this run.

    ratio is Baton's median over the baseline's: for a rate (higher is better) a ratio under 1 is what
    Baton costs; for a time per operation (lower is better) a ratio over 1 is.
    """

    key: str
    what: str
    baseline_what: str
    unit: str
    higher_is_better: bool
    baton: Series = field(default_factory=Series)
    baseline: Series = field(default_factory=Series)
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.baton.median / self.baseline.median if self.baseline.median else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "what": self.what,
            "baseline_what": self.baseline_what,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "baton": self.baton.as_json(),
            "baseline": self.baseline.as_json(),
            "ratio": self.ratio,
            "note": self.note,
        }


async def alternate(
    comparison: Comparison,
    reps: int,
    baton: Callable[[int], Awaitable[float]],
    baseline: Callable[[int], Awaitable[float]],
) -> Comparison:
    """Run Baton's side and the baseline's reps times each, alternating which goes first, so drift on a
    shared machine (another job, a warming cache, a growing log) falls on both sides alike."""
    for rep in range(reps):
        if rep % 2 == 0:
            comparison.baton.samples.append(await baton(rep))
            comparison.baseline.samples.append(await baseline(rep))
        else:
            comparison.baseline.samples.append(await baseline(rep))
            comparison.baton.samples.append(await baton(rep))
    return comparison


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


@dataclass
class LoadPoint:
    """Handoff latency (proposal to verdict) while workflows were offered at a steady rate."""

    offered_per_s: float
    achieved_per_s: float
    workflows: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)
