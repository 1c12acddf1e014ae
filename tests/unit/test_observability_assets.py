"""The dashboard and the alert rules read only metrics Baton exports, every figure the issue asks for has its
panel and its alert, and Grafana's model check really rejects a broken dashboard."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from baton.telemetry import dashboard, metrics

REPO = Path(__file__).resolve().parents[2]
OBS = REPO / "deploy" / "observability"
DASHBOARD = OBS / "grafana" / "dashboards" / "baton.json"
ALERTS = OBS / "prometheus" / "alerts.yml"


def exported_series() -> set[str]:
    names: set[str] = set()
    for family in vars(metrics).values():
        if isinstance(family, Counter):
            names.add(f"{family._name}_total")
        elif isinstance(family, Histogram):
            names.update(f"{family._name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif isinstance(family, Gauge):
            names.add(family._name)
    return names


def referenced(expr: str) -> set[str]:
    return {name for name in re.findall(r"\b(baton_[a-z_]+)", expr)}


def test_every_query_and_rule_reads_a_metric_baton_exports() -> None:
    exported = exported_series()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    exprs += [r["expr"] for r in rules]
    used = set().union(*(referenced(e) for e in exprs))
    assert used and used <= exported, sorted(used - exported)
    # And the dashboard is the one the generator writes.
    assert DASHBOARD.read_text() == dashboard.dashboard_json()


def test_the_figures_the_issue_names_each_have_a_panel_and_the_alerts_exist() -> None:
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert {
        "Task success rate",
        "Cost per successful run",
        "Outcomes by reason",
        "Steps per workflow",
        "Tool calls per workflow",
        "Tokens per workflow",
        "Decision latency",
        "Handoff latency",
        "Context-handoff success rate",
        "Handoff rejections by reason",
        "Circuit-breaker trips",
        "Escalations by reason",
        "Approvals",
        "Tool error rate",
        "Dead-lettered messages",
        "Consumer lag",
        "Time to detection of failed workflows",
        "Behaviour anomalies",
        "Tenant spend",
    } <= titles
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert {
        "BatonHandoffSuccessRateLow",
        "BatonBreakerTripsSpiking",
        "BatonTenantSpendHigh",
        "BatonConsumerLagGrowing",
        "BatonDeadLetters",
        "BatonFailureDetectionSlow",
    } <= set(rules)
    tested = {
        t["alertname"]
        for t in (
            case
            for test in yaml.safe_load((OBS / "prometheus" / "alerts.test.yml").read_text())["tests"]
            for case in test["alert_rule_test"]
        )
    }
    assert tested == set(rules), set(rules) - tested
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 60, name


def test_grafanas_model_rejects_a_broken_dashboard(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("npm is needed to check dashboards against Grafana's model")
        pytest.skip("npm missing")
    good = json.loads(DASHBOARD.read_text())
    broken = copy.deepcopy(good)
    broken["panels"][1]["gridPos"]["w"] = "wide"
    misspelt = copy.deepcopy(good)
    misspelt["panels"][1]["titel"] = misspelt["panels"][1].pop("title")
    check = [str(REPO / "scripts" / "check-grafana-dashboard.sh")]
    for name, model in (("broken", broken), ("misspelt", misspelt)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(model, indent=2))
        result = subprocess.run([*check, str(path)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert "does not follow Grafana's dashboard model" in result.stderr
    ok = subprocess.run([*check, str(DASHBOARD)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
