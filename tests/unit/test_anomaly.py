"""Behaviour baselines: clean traffic raises nothing; a compromised agent (a burst of privileged calls, a tool
sequence it never uses) and a slow drift (40 % more verbose) are flagged, exactly as often as they should be."""

from __future__ import annotations

import random
import time

import pytest
from pydantic import ValidationError

from baton.anomaly import Anomaly, AnomalySettings, BehaviourMonitor, StepBehaviour

GRAMMAR = {
    "kyc_agent": (("lookup_customer", "check_documents"), 0),
    "refund_agent": (("lookup_ticket", "preview_refund", "issue_refund"), 1),
    "router": (("classify",), 0),
}


def clean_step(rng: random.Random, agent: str, i: int, *, verbosity: float = 1.0) -> StepBehaviour:
    tools, privileged = GRAMMAR[agent]
    if rng.random() < 0.1:  # an occasional second lookup
        tools = (tools[0], *tools)
    failed = rng.random() < 0.03
    workflow_type = "a" if rng.random() < 0.5 else "b"
    mean_tokens = (300 if workflow_type == "a" else 420) * verbosity
    return StepBehaviour(
        agent=agent,
        workflow_id=f"wf-{agent}-{i}",
        workflow_type=workflow_type,
        tools=tools[: rng.randint(1, len(tools))] if failed else tools,
        privileged_calls=0 if failed else privileged,
        tokens=max(1, round(rng.gauss(mean_tokens, 0.15 * mean_tokens))),
        duration_s=rng.lognormvariate(-0.5, 0.4),
        failed=failed,
    )


def warmed(seed: int = 7, steps: int = 200, agent: str = "refund_agent") -> tuple[BehaviourMonitor, random.Random]:
    rng = random.Random(seed)
    monitor = BehaviourMonitor()
    for i in range(steps):
        assert monitor.observe(clean_step(rng, agent, i)) == []
    return monitor, rng


def test_clean_traffic_of_three_agents_raises_nothing() -> None:
    rng = random.Random(1)
    monitor = BehaviourMonitor()
    found: list[Anomaly] = []
    started = time.perf_counter()
    steps = 0
    for i in range(5000):
        for agent in GRAMMAR:
            found += monitor.observe(clean_step(rng, agent, i))
            steps += 1
    print(f"observe(): {(time.perf_counter() - started) / steps * 1e6:.1f} µs per step")
    assert found == []
    assert monitor.baseline("refund_agent")["steps"] == 5000


def test_a_burst_of_privileged_calls_is_flagged_in_that_step_and_in_each_bursty_step_after() -> None:
    monitor, rng = warmed()
    for i in range(3):
        burst = StepBehaviour(
            "refund_agent", f"wf-burst-{i}", "a", ("lookup_ticket",) + ("issue_refund",) * 10, 10, 350, 0.6, False
        )
        found = monitor.observe(burst)
        assert ("burst", "privileged_calls") in {(a.kind, a.feature) for a in found}, found
        privileged = next(a for a in found if a.feature == "privileged_calls")
        assert privileged.observed == 10 and privileged.baseline < 1.1 and privileged.workflow_id == f"wf-burst-{i}"
        assert monitor.observe(clean_step(rng, "refund_agent", 1000 + i)) == []


def test_a_tool_the_agent_never_used_or_an_order_it_never_follows_is_flagged() -> None:
    monitor, _rng = warmed()
    exfiltrate = StepBehaviour("refund_agent", "wf-x", "a", ("lookup_ticket", "export_customers"), 0, 350, 0.6, False)
    found = monitor.observe(exfiltrate)
    assert [(a.kind, a.feature) for a in found] == [("sequence", "tool_mix")]
    assert "export_customers" in found[0].detail
    backwards = StepBehaviour("refund_agent", "wf-y", "a", ("issue_refund", "lookup_ticket"), 1, 350, 0.6, False)
    kinds = {(a.kind, a.feature) for a in monitor.observe(backwards)}
    assert kinds == {("sequence", "tool_transition")}


def test_a_slow_drift_to_40_percent_more_verbose_is_flagged_once() -> None:
    monitor, rng = warmed(steps=300)
    found: list[Anomaly] = []
    ramp = 300
    for i in range(ramp):
        found += monitor.observe(clean_step(rng, "refund_agent", 300 + i, verbosity=1 + 0.4 * i / ramp))
    for i in range(600):
        found += monitor.observe(clean_step(rng, "refund_agent", 900 + i, verbosity=1.4))
    drifts = [a for a in found if a.kind == "drift"]
    assert [(a.feature, a.threshold) for a in drifts] == [("tokens", 0.25)], found
    assert drifts[0].score >= 0.25 and drifts[0].observed > drifts[0].baseline
    assert [a for a in found if a.kind != "drift"] == []


def test_a_ten_percent_drift_is_below_the_threshold() -> None:
    monitor, rng = warmed(steps=300)
    found: list[Anomaly] = []
    for i in range(900):
        found += monitor.observe(clean_step(rng, "refund_agent", 300 + i, verbosity=1 + 0.1 * min(i, 300) / 300))
    assert found == []


def test_a_run_of_failures_is_an_error_rate_anomaly_reported_once() -> None:
    monitor, _rng = warmed()
    found: list[Anomaly] = []
    for i in range(40):
        tools = ("lookup_ticket", "preview_refund", "issue_refund")  # the usual calls; the last one fails
        step = StepBehaviour("refund_agent", f"wf-f-{i}", "a", tools, 1, 360, 0.5, True)
        found += monitor.observe(step)
    assert [a.kind for a in found] == ["error_rate"]


def test_nothing_is_judged_during_warm_up_and_memory_is_bounded() -> None:
    monitor = BehaviourMonitor(AnomalySettings(warmup_steps=50), max_agents=100)
    wild = StepBehaviour("new_agent", "wf", "a", ("x",) * 30, 30, 10**6, 100.0, True)
    assert all(monitor.observe(wild) == [] for _ in range(50))
    for i in range(5000):
        monitor.observe(StepBehaviour(f"agent-{i}", "wf", "a", ("t",), 0, 100, 0.1, False))
    assert len(monitor) == 100 and monitor.baseline("agent-0") == {}


@pytest.mark.parametrize("field", ["burst_z", "drift_ratio", "warmup_steps"])
def test_settings_refuse_a_threshold_that_cannot_work(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AnomalySettings(**{field: -1})
