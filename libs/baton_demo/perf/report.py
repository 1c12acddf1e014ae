"""What `make bench` writes: bench/report.md, bench/report.json and PNG plots, with each goal met or NOT met
and, where missed, the profile of where the time goes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baton_demo.perf.profiling import Profile
from baton_demo.perf.stats import Comparison, LoadPoint


@dataclass
class Goal:
    """One goal of the issue, judged on this run's figure."""

    key: str
    what: str
    target: str
    value: float
    unit: str
    met: bool
    profile: str | None = None  # key of the profile that shows where the time goes

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BenchReport:
    mode: str
    started: str
    elapsed_s: float
    parameters: dict[str, Any]
    machine: dict[str, Any]
    comparisons: list[Comparison] = field(default_factory=list)
    latency_curve: list[LoadPoint] = field(default_factory=list)
    max_workflows_per_s: float = float("nan")
    cpu_runs: list[tuple[int, float]] = field(default_factory=list)  # (workflows, CPU seconds)
    memory: list[dict[str, Any]] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def comparison(self, key: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.key == key), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "started": self.started,
            "elapsed_s": self.elapsed_s,
            "parameters": self.parameters,
            "machine": self.machine,
            "comparisons": [c.as_json() for c in self.comparisons],
            "latency_curve": [p.as_json() for p in self.latency_curve],
            "max_workflows_per_s": self.max_workflows_per_s,
            "cpu_runs": [{"workflows": w, "cpu_s": s} for w, s in self.cpu_runs],
            "memory": self.memory,
            "goals": [g.as_json() for g in self.goals],
            "profiles": {k: p.as_json() for k, p in self.profiles.items()},
            "notes": self.notes,
        }


# (comparison key, which side, how to read it, target, unit, met?, profile key)
_GOALS: list[tuple[str, str, str, str, str, Callable[[float], bool], str]] = [
    (
        "validator",
        "ratio",
        "handoff validator against the batched passthrough",
        ">= 0.8x",
        "x",
        lambda v: v >= 0.8,
        "validator",
    ),
    ("e2e_events", "baton", "end to end on Kafka", ">= 5,000 events/s", "events/s", lambda v: v >= 5000, "mesh"),
    ("auditor", "ratio", "auditor against bare insert_many", ">= 0.8x", "x", lambda v: v >= 0.8, "auditor"),
    (
        "verify_sqlite",
        "baton",
        "baton audit verify on the embedded store",
        ">= 100,000 records/s",
        "records/s",
        lambda v: v >= 100_000,
        "verify",
    ),
    (
        "validation",
        "baton",
        "in-process validation per 2 KB proposal",
        "<= 60 µs",
        "µs",
        lambda v: v <= 60,
        "validation",
    ),
    (
        "demo_audit",
        "baton",
        "embedded demo with the audit",
        ">= 5,000 events/s",
        "events/s",
        lambda v: v >= 5000,
        "demo",
    ),
    ("cpu_10x", "ratio", "CPU seconds for 10x the workflows against 1x", "<= 10.5x", "x", lambda v: v <= 10.5, "demo"),
    (
        "telemetry",
        "ratio",
        "tracing (every workflow) and metrics on against off",
        ">= 0.9x",
        "x",
        lambda v: v >= 0.9,
        "demo",
    ),
    (
        "telemetry_sampled",
        "ratio",
        "tracing (10 % of workflows) and metrics on against off",
        ">= 0.9x",
        "x",
        lambda v: v >= 0.9,
        "demo",
    ),
]


def judge(report: BenchReport) -> list[Goal]:
    """Each goal whose figure this run measured, met or not."""
    goals: list[Goal] = []
    for key, side, what, target, unit, ok, profile in _GOALS:
        cmp = report.comparison(key)
        if cmp is None:
            continue
        value = cmp.ratio if side == "ratio" else cmp.baton.median
        goals.append(Goal(key, what, target, value, unit, ok(value), profile))
        if key == "e2e_events":
            half = next(
                (p for p in report.latency_curve if math.isclose(p.offered_per_s, report.max_workflows_per_s / 2)), None
            )
            if half is not None:
                goals.append(
                    Goal(
                        "p99_half_load",
                        "handoff p99 at half of the maximum load on Kafka",
                        "<= 10 ms",
                        half.p99_ms,
                        "ms",
                        half.p99_ms <= 10,
                        "mesh",
                    )
                )
    return goals


def _n(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "x":
        return f"{value:.3f}x"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:,.2f} {unit}".strip()


def _side(series: Any, unit: str) -> str:
    return f"{_n(series.median, unit)} ({_n(series.min, '')}-{_n(series.max, '')})"


def markdown(report: BenchReport, plots: list[str]) -> str:
    """The Markdown report."""
    out = [
        f"# Baton bench ({report.mode})",
        "",
        f"Started {report.started}, took {report.elapsed_s / 60:.1f} min on {report.machine.get('cpus', '?')} CPUs "
        f"({report.machine.get('python', '')}, Kafka {report.machine.get('kafka', '?')}, "
        f"FerretDB {report.machine.get('ferretdb', '?')}).",
        "",
        "Every figure is measured alongside its baseline in this run, alternating which goes first, "
        f"{report.parameters.get('reps', '?')} repetitions each: median (min-max); the ratio is of the medians.",
        "",
        "Parameters: "
        + ", ".join(f"{k} = {v:,}" if isinstance(v, int) else f"{k} = {v}" for k, v in report.parameters.items()),
        "",
        "## Goals",
        "",
        "| goal | target | this run | |",
        "|---|---|---|---|",
    ]
    for g in report.goals:
        out.append(f"| {g.what} | {g.target} | {_n(g.value, g.unit)} | {'met' if g.met else '**NOT met**'} |")
    out += ["", "## Figures", "", "| what | Baton | baseline | ratio |", "|---|---|---|---|"]
    for c in report.comparisons:
        out.append(
            f"| {c.what} | {_side(c.baton, c.unit)} | {c.baseline_what}: {_side(c.baseline, c.unit)} | {c.ratio:.3f}x |"
        )
    if report.latency_curve:
        out += [
            "",
            "## Handoff latency against load (Kafka, every service a process; "
            f"maximum {report.max_workflows_per_s:,.1f} workflows/s)",
            "",
            "Proposal to verdict, by the two producers' clocks (millisecond resolution). The highest load is "
            "the closed-loop runs (every workflow submitted at once: the maximum), the others offered steadily.",
            "",
            "| offered workflows/s | achieved | workflows | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
        ]
        for p in sorted(report.latency_curve, key=lambda p: p.offered_per_s):
            out.append(
                f"| {p.offered_per_s:,.1f} | {p.achieved_per_s:,.1f} | {p.workflows:,} "
                f"| {p.p50_ms:.1f} | {p.p99_ms:.1f} | {p.max_ms:.1f} |"
            )
    if report.cpu_runs:
        out += [
            "",
            "## CPU seconds against workflows (embedded mesh with the audit)",
            "",
            "| workflows | CPU s |",
            "|---|---|",
        ]
        out += [f"| {w:,} | {s:.1f} |" for w, s in sorted(report.cpu_runs)]
    if report.memory:
        out += [
            "",
            "## Resident memory per service (`baton soak`, a fresh process each)",
            "",
            "| service | workflows | RSS MiB |",
            "|---|---|---|",
        ]
        out += [f"| {m['service']} | {m['workflows']:,} | {m['rss_mib']:.1f} |" for m in report.memory]
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    missed = [g for g in report.goals if not g.met]
    if missed:
        out += ["", "## Where the time goes (goals NOT met)", ""]
        shown: set[str] = set()
        for g in missed:
            if g.profile is None or g.profile in shown or g.profile not in report.profiles:
                continue
            shown.add(g.profile)
            prof = report.profiles[g.profile]
            out += [
                f"### {prof.what}",
                "",
                "Goals: " + ", ".join(m.what for m in missed if m.profile == g.profile) + ". "
                f"{prof.total_s:.1f} s profiled, of which {prof.baton_self_s:.1f} s in Baton's own functions (self "
                "time); the rest is in libraries (Avro, Ed25519, aiokafka, pymongo, sqlite3) and in the event "
                "loop waiting for the broker or the store.",
                "",
            ]
            for title, rows in (("cumulative", prof.by_cumulative), ("self", prof.by_self)):
                out += [
                    f"Top Baton functions by {title} time:",
                    "",
                    "| function | calls | self s | cumulative s |",
                    "|---|---|---|---|",
                ]
                out += [
                    f"| `{r['function']}` | {r['calls']:,} | {r['self_s']:.3f} | {r['cumulative_s']:.3f} |"
                    for r in rows
                ]
                out.append("")
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def plot(report: BenchReport, out: Path) -> list[str]:
    """PNG plots (matplotlib's Agg backend, no display); none when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report.notes.append("no plots: matplotlib is not installed (pip install -e '.[bench]')")
        return []
    written: list[str] = []
    if report.comparisons:
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(report.comparisons) + 1.5))
        labels = [c.key for c in report.comparisons]
        ratios = [c.ratio if c.higher_is_better else 1 / c.ratio for c in report.comparisons]
        ax.barh(labels, ratios, color=["tab:green" if r >= 0.8 else "tab:red" for r in ratios])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.axvline(0.8, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("Baton / baseline (medians; for times, baseline / Baton): higher is better")
        ax.set_title("Throughput ratios against baselines measured in the same run")
        fig.tight_layout()
        fig.savefig(out / "ratios.png", dpi=110)
        plt.close(fig)
        written.append("ratios.png")
    if report.latency_curve:
        points = sorted(report.latency_curve, key=lambda p: p.offered_per_s)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [p.offered_per_s for p in points]
        ax.plot(xs, [p.p50_ms for p in points], "o-", label="p50")
        ax.plot(xs, [p.p99_ms for p in points], "s-", label="p99")
        ax.axhline(10, color="grey", linestyle="--", linewidth=0.8, label="goal p99 10 ms")
        ax.set_xlabel("offered load, workflows/s (rightmost: closed loop, the maximum)")
        ax.set_ylabel("handoff latency, ms")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title("Handoff latency against load (Kafka, every service a process)")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        written.append("latency.png")
    if report.cpu_runs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        runs = sorted(report.cpu_runs)
        ax.plot([w for w, _ in runs], [s for _, s in runs], "o", label="runs")
        smallest = runs[0]
        biggest = runs[-1][0]
        ax.plot(
            [smallest[0], biggest],
            [smallest[1], smallest[1] * biggest / smallest[0]],
            "--",
            label="linear from the smallest",
        )
        ax.set_xlabel("workflows")
        ax.set_ylabel("CPU seconds")
        ax.legend()
        ax.set_title("CPU seconds against workflows (embedded mesh with the audit)")
        fig.tight_layout()
        fig.savefig(out / "cpu.png", dpi=110)
        plt.close(fig)
        written.append("cpu.png")
    return written


def write(report: BenchReport, out: Path) -> list[Path]:
    """Judge the goals and write report.md, report.json and the plots into out."""
    out.mkdir(parents=True, exist_ok=True)
    report.goals = judge(report)
    plots = plot(report, out)
    (out / "report.md").write_text(markdown(report, plots))
    (out / "report.json").write_text(json.dumps(report.as_json(), indent=2, ensure_ascii=False, allow_nan=True) + "\n")
    return [out / "report.md", out / "report.json", *(out / p for p in plots)]
