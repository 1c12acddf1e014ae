"""The bench's report writer on made-up figures: its structure, never a timing of this machine."""

from __future__ import annotations

import json
from pathlib import Path

from baton_demo.perf.profiling import Profile
from baton_demo.perf.report import BenchReport, write
from baton_demo.perf.stats import Comparison, LoadPoint, Series, percentile


def _cmp(key: str, unit: str, baton: list[float], baseline: list[float], *, higher: bool = True) -> Comparison:
    return Comparison(key, f"Baton {key}", f"baseline {key}", unit, higher, Series(baton), Series(baseline))


def _report() -> BenchReport:
    report = BenchReport(
        mode="quick",
        started="2026-01-01 00:00 UTC",
        elapsed_s=60.0,
        parameters={"reps": 3},
        machine={"cpus": 2},
        comparisons=[
            _cmp("validator", "records/s", [900, 1000, 1100], [1000, 1000, 1000]),  # 1.0x: met
            _cmp("e2e_events", "events/s", [100, 200, 300], [400, 500, 600]),  # 200 /s: NOT met
            _cmp("validation", "µs", [50, 55, 70], [10, 11, 12], higher=False),  # 55 µs: met
            _cmp("cpu_10x", "CPU s", [110, 120, 130], [10, 10, 10], higher=False),  # 12x: NOT met
        ],
        latency_curve=[LoadPoint(10.0, 9.9, 100, 3.0, 8.0, 9.0), LoadPoint(20.0, 18.0, 200, 5.0, 30.0, 40.0)],
        max_workflows_per_s=20.0,
        cpu_runs=[(10, 10.0), (100, 120.0)],
        memory=[{"service": "supervisor", "workflows": 10_000, "rss_mib": 60.0}],
        profiles={
            "mesh": Profile(
                "the mesh",
                12.0,
                2.5,
                [{"function": "baton/x.py:1(f)", "calls": 3, "self_s": 1.0, "cumulative_s": 2.0}],
                [],
            ),
        },
    )
    return report


def test_the_report_judges_each_goal_from_its_figure_and_profiles_the_missed_ones(tmp_path: Path) -> None:
    files = write(_report(), tmp_path)
    assert tmp_path / "report.md" in files and tmp_path / "report.json" in files
    data = json.loads((tmp_path / "report.json").read_text())
    goals = {g["key"]: g for g in data["goals"]}
    assert goals["validator"]["met"] and goals["validator"]["value"] == 1.0
    assert not goals["e2e_events"]["met"] and goals["e2e_events"]["value"] == 200
    assert goals["validation"]["met"] and goals["validation"]["value"] == 55
    assert not goals["cpu_10x"]["met"] and goals["cpu_10x"]["value"] == 12
    # p99 at half of the maximum (20/s): the 10/s point's 8 ms
    assert goals["p99_half_load"]["met"] and goals["p99_half_load"]["value"] == 8.0
    assert "auditor" not in goals  # not measured: not judged
    cmp = {c["key"]: c for c in data["comparisons"]}["e2e_events"]
    assert cmp["baton"] == {"samples": [100, 200, 300], "min": 100, "median": 200, "max": 300}
    assert cmp["ratio"] == 0.4
    md = (tmp_path / "report.md").read_text()
    assert "| end to end on Kafka | >= 5,000 events/s | 200 events/s | **NOT met** |" in md
    assert (
        "| Baton validator | 1,000 records/s (900-1,100) | baseline validator: 1,000 records/s (1,000-1,000) | 1.000x |"
        in md
    )
    assert "### the mesh\n\nGoals: end to end on Kafka, handoff p99" not in md  # p99 was met
    assert "### the mesh\n\nGoals: end to end on Kafka. 12.0 s profiled, of which 2.5 s in Baton" in md
    assert "`baton/x.py:1(f)`" in md
    for plot in ("ratios.png", "latency.png", "cpu.png"):
        assert (plot in md) == (tmp_path / plot).exists()


def test_percentile_is_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
