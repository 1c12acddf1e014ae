"""Baton's Grafana dashboard, as code: `make deploy` writes deploy/observability/grafana/dashboards/baton.json.

Every query reads a metric of baton.telemetry.metrics; the tests check the names, Grafana's dashboard model
(`make observability`) and that the file is what this module writes.
"""

from __future__ import annotations

import json
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
WORKFLOW = 'workflow=~"$workflow"'
AGENT = 'agent=~"$agent"'


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def _quantiles(metric: str, by: str, matcher: str = "") -> list[tuple[str, str]]:
    selector = f"{{{matcher}}}" if matcher else ""
    return [
        (
            f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket{selector}[{RATE}])))",
            f"p{round(q * 100)}{' {{' + by + '}}' if by else ''}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


class _Layout:
    """Panels in rows of 24 grid units: each panel is placed after the one before."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.ids = 0

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y = 0, self.y + 8
        self.ids += 1
        self.panels.append(
            {
                "type": "row",
                "id": self.ids,
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def panel(
        self,
        title: str,
        description: str,
        queries: list[tuple[str, str]],
        *,
        unit: str = "short",
        kind: str = "timeseries",
        width: int = 8,
        thresholds: list[tuple[str, float | None]] | None = None,
    ) -> None:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + 8
        self.ids += 1
        steps = [{"color": color, "value": value} for color, value in (thresholds or [("green", None)])]
        self.panels.append(
            {
                "type": kind,
                "id": self.ids,
                "title": title,
                "description": description,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
                "fieldConfig": {
                    "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                    "overrides": [],
                },
                "options": {},
                "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)],
            }
        )
        self.x += width


def dashboard() -> dict[str, Any]:
    """The dashboard model (Grafana's JSON, schema version 41)."""
    g = _Layout()
    g.row("Workflows")
    g.panel(
        "Task success rate",
        "Completed workflows over all outcomes, per workflow type.",
        [
            (
                f'sum by (workflow) (rate(baton_workflow_outcomes_total{{outcome="completed", {WORKFLOW}}}[{RATE}]))'
                f" / sum by (workflow) (rate(baton_workflow_outcomes_total{{{WORKFLOW}}}[{RATE}]))",
                "{{workflow}}",
            )
        ],
        unit="percentunit",
        thresholds=[("red", None), ("orange", 0.8), ("green", 0.95)],
    )
    g.panel(
        "Cost per successful run",
        "Model spend of completed workflows over how many completed, per workflow type.",
        [
            (
                f'sum by (workflow) (rate(baton_workflow_cost_usd_total{{outcome="completed", {WORKFLOW}}}[{RATE}]))'
                " / sum by (workflow) "
                f'(rate(baton_workflow_outcomes_total{{outcome="completed", {WORKFLOW}}}[{RATE}]))',
                "{{workflow}}",
            )
        ],
        unit="currencyUSD",
    )
    g.panel(
        "Outcomes by reason",
        "Workflows ended per interval: completed, halted or escalated, and why.",
        [
            (
                f"sum by (outcome, reason) (increase(baton_workflow_outcomes_total{{{WORKFLOW}}}[{RATE}]))",
                "{{outcome}} {{reason}}",
            )
        ],
    )
    for metric, title, unit in (
        ("baton_workflow_steps", "Steps per workflow", "short"),
        ("baton_workflow_tool_calls", "Tool calls per workflow", "short"),
        ("baton_workflow_tokens", "Tokens per workflow", "short"),
    ):
        g.panel(
            title,
            f"{title} of finished workflows: p50, p95, p99 per workflow type.",
            _quantiles(metric, "workflow", WORKFLOW),
            unit=unit,
        )
    g.panel(
        "Time to detection of failed workflows",
        "From a failed workflow's last progress to its halt or escalation (p50, p95, p99).",
        _quantiles("baton_failure_detection_seconds", ""),
        unit="s",
    )
    g.panel(
        "Circuit-breaker trips",
        "Budgets (steps, tokens, tool calls, cost, wall clock, loop), the rate limit and the spend limit, per breaker.",
        [(f"sum by (breaker) (increase(baton_breaker_trips_total[{RATE}]))", "{{breaker}}")],
    )
    g.panel(
        "Escalations by reason",
        "Workflows handed to humans, by reason.",
        [(f"sum by (reason) (increase(baton_escalations_total{{{WORKFLOW}}}[{RATE}]))", "{{reason}}")],
    )
    g.row("Agents")
    g.panel(
        "Decision latency",
        "An agent's step, from the request read to the result published (p50, p95, p99 per agent).",
        _quantiles("baton_decision_latency_seconds", "agent", AGENT),
        unit="s",
    )
    g.panel(
        "Tool error rate",
        "Tool calls that failed over all tool calls, per tool.",
        [
            (
                f'sum by (tool) (rate(baton_tool_calls_total{{result="error"}}[{RATE}]))'
                f" / sum by (tool) (rate(baton_tool_calls_total[{RATE}]))",
                "{{tool}}",
            )
        ],
        unit="percentunit",
    )
    g.panel(
        "Tokens",
        "Model tokens per second, by agent and type.",
        [(f"sum by (agent, type) (rate(baton_model_tokens_total{{{AGENT}}}[{RATE}]))", "{{agent}} {{type}}")],
    )
    g.panel(
        "Behaviour anomalies",
        "Agent steps outside their learned baseline, by agent and kind (burst, sequence, drift, error rate).",
        [
            (
                f"sum by (agent, kind, action) (increase(baton_agent_anomalies_total{{{AGENT}}}[{RATE}]))",
                "{{agent}} {{kind}} {{action}}",
            )
        ],
        thresholds=[("green", None), ("red", 1)],
    )
    g.row("Handoffs")
    g.panel(
        "Context-handoff success rate",
        "Handoffs accepted by the validator over all verdicts.",
        [
            (
                f'sum(rate(baton_handoffs_total{{verdict="accepted"}}[{RATE}]))'
                f" / sum(rate(baton_handoffs_total[{RATE}]))",
                "accepted",
            )
        ],
        unit="percentunit",
        thresholds=[("red", None), ("green", 0.95)],
    )
    g.panel(
        "Handoff rejections by reason",
        "Truncated, stale, tampered, oversized contexts and the rest, per interval.",
        [(f"sum by (reason) (increase(baton_handoff_rejections_total[{RATE}]))", "{{reason}}")],
    )
    g.panel(
        "Handoff latency",
        "From a handoff's proposal to its verdict (p50, p95, p99).",
        _quantiles("baton_handoff_latency_seconds", ""),
        unit="s",
    )
    g.row("Guard and approvals")
    g.panel(
        "Guard verdicts",
        "Tool calls allowed and denied, by permission tier.",
        [(f"sum by (tier, verdict) (rate(baton_guard_verdicts_total[{RATE}]))", "{{tier}} {{verdict}}")],
        unit="ops",
    )
    g.panel(
        "Guard denials by reason",
        "Why the guard said no.",
        [(f"sum by (reason) (increase(baton_guard_denials_total[{RATE}]))", "{{reason}}")],
    )
    g.panel(
        "Tenant spend",
        "Each tenant's spend today over its daily limit.",
        [("max by (tenant) (baton_tenant_spend_ratio)", "{{tenant}}")],
        unit="percentunit",
        thresholds=[("green", None), ("orange", 0.8), ("red", 1)],
    )
    g.panel(
        "Approvals",
        "Actions asked of reviewers and how they were decided, per interval.",
        [
            (f"sum by (queue) (increase(baton_approvals_requested_total[{RATE}]))", "requested {{queue}}"),
            (f"sum by (decision) (increase(baton_approvals_decided_total[{RATE}]))", "{{decision}}"),
        ],
    )
    g.panel(
        "Approvals pending",
        "Approvals waiting for a decision, per queue.",
        [("max by (queue) (baton_approvals_pending)", "{{queue}}")],
    )
    g.panel(
        "Time to an approval decision",
        "From request to decision (p50, p95, p99 per queue).",
        _quantiles("baton_approval_wait_seconds", "queue"),
        unit="s",
    )
    g.row("Bus")
    g.panel(
        "Dead-lettered messages",
        "Records parked on the dead-letter topic, by source topic and reason: any is worth a look.",
        [(f"sum by (topic, reason) (increase(baton_dead_letters_total[{RATE}]))", "{{topic}} {{reason}}")],
        thresholds=[("green", None), ("red", 1)],
    )
    g.panel(
        "Consumer lag",
        "Records each consumer group has yet to process, per topic and partition.",
        [("max by (group, topic, partition) (baton_consumer_lag_messages)", "{{group}} {{topic}}/{{partition}}")],
    )
    g.panel(
        "Events",
        "Events published and processed per second, by topic.",
        [
            (f"sum by (topic) (rate(baton_events_published_total[{RATE}]))", "published {{topic}}"),
            (f"sum by (topic) (rate(baton_events_processed_total[{RATE}]))", "processed {{topic}}"),
        ],
        unit="ops",
    )
    return {
        "uid": "baton-overview",
        "title": "Baton",
        "description": "Baton's workflows, agents, handoffs, guard, approvals and bus (deploy/observability).",
        "tags": ["baton"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 41,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                    "hide": 0,
                },
                _label_variable("workflow", "Workflow", "label_values(baton_workflow_outcomes_total, workflow)"),
                _label_variable("agent", "Agent", "label_values(baton_decision_latency_seconds_count, agent)"),
            ]
        },
        "panels": g.panels,
    }


def _label_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "hide": 0,
        "sort": 1,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"
