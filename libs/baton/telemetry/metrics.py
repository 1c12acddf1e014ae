"""Baton's Prometheus metrics: the one catalogue, named and labelled by Prometheus conventions.

Every service process registers the same families in the default registry and serves them at `/metrics`
(see baton.health); a family a service never touches stays empty there. Labels are bounded sets (workflow
types, agent kinds, tools, topics, reason codes, tenants) — never ids — so memory stays bounded however long
a service runs. The dashboard (deploy/observability/grafana) and the alert rules
(deploy/observability/prometheus) read these names: change one, change them too.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Buckets in seconds from 5 ms to 5 min: a handoff takes milliseconds, a step with a slow model seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# How long failure takes to be detected: from a workflow's last progress to its halt or escalation.
DETECTION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
COUNT_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
TOKEN_BUCKETS = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000)
COST_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)

# -- workflows (the supervisor) -------------------------------------------------------------------------------
WORKFLOWS_STARTED = Counter("baton_workflows_started", "Tasks admitted as a new workflow", ["workflow"])
WORKFLOW_OUTCOMES = Counter(
    "baton_workflow_outcomes",
    "Workflow outcomes published; task success rate = outcome=completed over all",
    ["workflow", "outcome", "reason"],
)
WORKFLOW_COST = Counter(
    "baton_workflow_cost_usd",
    "Model spend of finished workflows in US dollars; cost per successful run = this{outcome=completed} over "
    "baton_workflow_outcomes_total{outcome=completed}",
    ["workflow", "outcome"],
)
WORKFLOW_STEPS = Histogram(
    "baton_workflow_steps", "Steps a finished workflow took", ["workflow"], buckets=COUNT_BUCKETS
)
WORKFLOW_TOOL_CALLS = Histogram(
    "baton_workflow_tool_calls", "Tool calls a finished workflow made", ["workflow"], buckets=COUNT_BUCKETS
)
WORKFLOW_TOKENS = Histogram(
    "baton_workflow_tokens", "Model tokens a finished workflow used", ["workflow"], buckets=TOKEN_BUCKETS
)
WORKFLOW_DURATION = Histogram(
    "baton_workflow_duration_seconds",
    "From task to outcome, time waiting for human approval excluded",
    ["workflow", "outcome"],
    buckets=LATENCY_BUCKETS,
)
FAILURE_DETECTION = Histogram(
    "baton_failure_detection_seconds",
    "Time to detection of a failed workflow: from its last progress to its halt or escalation",
    ["workflow", "reason"],
    buckets=DETECTION_BUCKETS,
)
BREAKER_TRIPS = Counter(
    "baton_breaker_trips",
    "Circuit breakers tripped: budgets (steps, tokens, tool_calls, cost, wall_clock, loop), rate, spend",
    ["breaker"],
)
ESCALATIONS = Counter("baton_escalations", "Workflows escalated to humans, by reason", ["workflow", "reason"])

# -- agents ---------------------------------------------------------------------------------------------------
DECISION_LATENCY = Histogram(
    "baton_decision_latency_seconds",
    "An agent's step: from the step request read to its result published",
    ["agent"],
    buckets=LATENCY_BUCKETS,
)
MODEL_TOKENS = Counter("baton_model_tokens", "Model tokens used, by agent and type", ["agent", "model", "type"])
TOOL_CALLS = Counter(
    "baton_tool_calls",
    "Tool calls an agent made; tool error rate = result=error over all",
    ["tool", "result"],
)
TOOL_LATENCY = Histogram(
    "baton_tool_call_duration_seconds", "A tool call, as the agent saw it", ["tool"], buckets=LATENCY_BUCKETS
)

# -- handoffs (the validator) ---------------------------------------------------------------------------------
HANDOFFS_PROPOSED = Counter("baton_handoffs_proposed", "Handoffs proposed to the validator", ["to_agent"])
HANDOFFS = Counter(
    "baton_handoffs",
    "Handoff verdicts; context-handoff success rate = verdict=accepted over all",
    ["to_agent", "verdict"],
)
HANDOFF_REJECTIONS = Counter("baton_handoff_rejections", "Handoffs rejected, by reason", ["reason"])
HANDOFF_LATENCY = Histogram(
    "baton_handoff_latency_seconds",
    "From a handoff's proposal to its verdict published",
    ["to_agent"],
    buckets=LATENCY_BUCKETS,
)

# -- the guard ------------------------------------------------------------------------------------------------
GUARD_VERDICTS = Counter("baton_guard_verdicts", "Tool-call verdicts by tier and outcome", ["tool", "tier", "verdict"])
GUARD_DENIALS = Counter("baton_guard_denials", "Tool calls denied, by reason", ["reason"])
TENANT_SPEND_RATIO = Gauge(
    "baton_tenant_spend_ratio", "A tenant's spend today over its daily limit (1 = the limit)", ["tenant"]
)

# -- approvals ------------------------------------------------------------------------------------------------
APPROVALS_REQUESTED = Counter("baton_approvals_requested", "Actions asked of human reviewers", ["queue"])
APPROVALS_DECIDED = Counter(
    "baton_approvals_decided", "Approvals decided: approved, rejected or expired", ["queue", "decision"]
)
APPROVALS_PENDING = Gauge("baton_approvals_pending", "Approvals waiting for a decision", ["queue"])
APPROVAL_WAIT = Histogram(
    "baton_approval_wait_seconds", "From request to decision", ["queue"], buckets=DETECTION_BUCKETS
)

# -- behaviour anomalies (baton.anomaly) ----------------------------------------------------------------------
ANOMALIES = Counter(
    "baton_agent_anomalies", "Agent behaviour outside its learned baseline, by kind", ["agent", "kind", "action"]
)

# -- the bus --------------------------------------------------------------------------------------------------
EVENTS_PUBLISHED = Counter("baton_events_published", "Events published and acknowledged", ["topic"])
EVENTS_PROCESSED = Counter("baton_events_processed", "Events consumed and handled", ["topic", "group"])
DEAD_LETTERS = Counter("baton_dead_letters", "Records parked on the dead-letter topic", ["topic", "reason"])
CONSUMER_LAG = Gauge(
    "baton_consumer_lag_messages",
    "Records a consumer group has yet to process, per partition (high watermark minus position)",
    ["group", "topic", "partition"],
)


# -- label values an event supplies -----------------------------------------------------------------------------

_LABEL_CAP = 200
_OTHER = "other"
_seen: dict[str, set[str]] = {}


def bounded(space: str, value: str | None, *, cap: int = _LABEL_CAP) -> str:
    """A label value that came with an event (a tool or agent an agent names, a reason code it reports): kept as it
    is for the first `cap` distinct values of its space, "other" after that, so a misbehaving producer cannot grow
    the number of series (and the process's memory) without bound. Values are cut to 64 characters."""
    text = (value or "none")[:64]
    seen = _seen.setdefault(space, set())
    if text in seen:
        return text
    if len(seen) >= cap:
        return _OTHER
    seen.add(text)
    return text


# -- switching them off ---------------------------------------------------------------------------------------


class _Off:
    """What a metric is while metrics are off: every update does nothing."""

    def labels(self, *_values: str, **_labels: str) -> _Off:
        return self

    def inc(self, _amount: float = 1) -> None:
        return None

    def observe(self, _value: float) -> None:
        return None

    def set(self, _value: float) -> None:
        return None

    def remove(self, *_values: str) -> None:
        return None


_OFF = _Off()
_FAMILIES = {name: value for name, value in dict(globals()).items() if isinstance(value, Counter | Gauge | Histogram)}


def switch(on: bool) -> None:
    """Turn every metric update on or off in this process (BATON_METRICS=false at start; the bench measures
    their cost this way). Off, `/metrics` still answers, with the process's own figures only."""
    for name, family in _FAMILIES.items():
        globals()[name] = family if on else _OFF
