"""Workflow declarations (YAML, validated by pydantic): agents, routing, tools, budgets, autonomy."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from baton.contracts.models import PermissionTier

END = "$end"
# Beside the declarations: the tool packs their agents use, and the schemas each pinned tool version had.
TOOL_PACK_FILE = "tools.yaml"
TOOL_LOCK_FILE = "tools.lock.json"
# Also beside them, not a workflow: the tenants task admission and the guard know (baton.policy.tenants).
TENANTS_FILE = "tenants.yaml"
# Nor this: who may decide approvals, and on which queues (services.approvals.reviewers).
REVIEWERS_FILE = "reviewers.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """Value at a dotted path ("refund_preview.amount"), or None when any part is missing."""
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class Condition(_Strict):
    """A test on one context field."""

    field: str
    op: Literal["gt", "ge", "lt", "le", "eq", "ne", "truthy", "falsy"]
    value: Any = None

    def holds(self, context: Mapping[str, Any]) -> bool:
        """Whether the condition is true of a context (missing field: only falsy holds)."""
        actual = lookup(context, self.field)
        if self.op == "truthy":
            return bool(actual)
        if self.op == "falsy":
            return not actual
        if actual is None:
            return False
        if self.op == "eq":
            return bool(actual == self.value)
        if self.op == "ne":
            return bool(actual != self.value)
        try:
            a, v = float(actual), float(self.value)
        except (TypeError, ValueError):
            return False
        return {"gt": a > v, "ge": a >= v, "lt": a < v, "le": a <= v}[self.op]


# Decision types whose actions always wait for a human, and the confidence under which the others escalate
# (the field's defaults; a workflow's confidence_thresholds or an agent's confidence_threshold override them).
ALWAYS_APPROVED_DECISIONS = frozenset({"deletion", "regulatory_filing"})
DECISION_THRESHOLDS: dict[str, float] = {
    "document_classification": 0.85,
    "report_generation": 0.80,
    "moderation": 0.75,
    "routing": 0.70,
}


class ApprovalRule(_Strict):
    """When a tool call needs a human (always, or when an argument crosses a threshold), and who decides it:
    M distinct reviewers of a queue within an SLA, and what happens when nobody does."""

    always: bool = False
    when: Condition | None = None
    approvers: int = Field(default=1, ge=1, description="distinct reviewers who must approve (M of N)")
    queue: str | None = Field(default=None, description="reviewer queue; default: the workflow's escalation queue")
    sla_s: float | None = Field(default=None, gt=0, description="time to decide; default: the escalation SLA")
    on_expiry: Literal["reject", "escalate"] = Field(
        default="reject", description="undecided in time: rejected, or moved once to escalate_to with a fresh SLA"
    )
    escalate_to: str | None = None

    @model_validator(mode="after")
    def _escalation_named(self) -> ApprovalRule:
        if self.on_expiry == "escalate" and not self.escalate_to:
            raise ValueError("on_expiry: escalate needs escalate_to: the queue the approval moves to")
        return self

    def required(self, arguments: Mapping[str, Any]) -> bool:
        return self.always or (self.when is not None and self.when.holds(arguments))


class QueryRule(_Strict):
    """A query tool's table allow-list: the SQL in `argument` may read or write only these tables."""

    argument: str = "query"
    tables: list[str] = Field(min_length=1)


class ToolSpec(_Strict):
    """A tool an agent may call: which registered tool (pinned to a version), with which tier.

    The tier is required because an MCP tool carries none; for a tool that declares its own, the
    declaration may raise it but never lower it (`baton tools check`).
    """

    name: str
    version: str | None = Field(default=None, description="the registered tool version this agent is pinned to")
    tier: PermissionTier
    description: str = ""
    args: dict[str, str] = Field(default_factory=dict, description="argument name -> context key")
    result_key: str = Field(description="context key the result is stored under")
    approval: ApprovalRule | None = None
    query: QueryRule | None = Field(
        default=None, description="a query tool: the tables its SQL argument may touch (the guard checks it)"
    )
    decision_type: str | None = Field(
        default=None, description="what kind of decision a call is (deletion and regulatory_filing always wait)"
    )


class ModelSpec(_Strict):
    """The model an agent reasons with: the scripted backend, or an OpenAI-compatible endpoint.

    Never a key: the agent service takes it from its configuration (BATON_AGENT_OPENAI_API_KEY).
    """

    backend: Literal["scripted", "openai"] = "scripted"
    name: str | None = Field(default=None, description="model name, e.g. gpt-4o-mini (openai backend)")
    base_url: str | None = Field(default=None, description="chat-completions base URL, e.g. https://api.x/v1")

    @model_validator(mode="after")
    def _complete(self) -> ModelSpec:
        if self.backend == "openai" and not (self.name and self.base_url):
            raise ValueError("an openai model needs both name and base_url (the key comes from configuration)")
        if self.base_url is not None and not self.base_url.startswith("https://") and not self.on_this_host:
            # The operator's key travels with every request: never in clear to another host.
            raise ValueError(f"model base_url {self.base_url!r} must be https:// (plain http only to this host)")
        return self

    @property
    def on_this_host(self) -> bool:
        """Whether base_url names this host (a local model server, reached without TLS or a key)."""
        host = urlsplit(self.base_url or "").hostname or ""
        return host in {"localhost", "127.0.0.1", "::1"}


class AgentSpec(_Strict):
    """One agent kind: what it needs, what it produces, which tools and which model it uses."""

    name: str
    description: str = ""
    model: ModelSpec | None = Field(default=None, description="this agent's model; default: the service's setting")
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    confidence_threshold: float | None = None
    decision_type: str | None = Field(
        default=None, description="the decision this agent makes; its default confidence threshold by type"
    )
    fallback_agent: str | None = None
    critical: bool = False
    may_drop: list[str] = Field(default_factory=list, description="context keys this agent may remove")
    may_summarise: list[str] = Field(default_factory=list, description="context keys this agent may summarise")

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)

    def owned_keys(self) -> set[str]:
        """Context keys this agent owns: its declared outputs and its tools' result keys."""
        return {*self.outputs, *(t.result_key for t in self.tools)}

    def tool_for_key(self, key: str) -> ToolSpec | None:
        """The tool whose result this agent stores under a context key, if any."""
        return next((t for t in self.tools if t.result_key == key), None)


class Route(_Strict):
    """Supervisor/worker routing: after an agent, go to another when a condition holds."""

    after: str
    to: str
    when: Condition | None = None


class Budgets(_Strict):
    """Limits enforced by the supervisor and the agent runtime, never by a prompt."""

    max_steps: int = 20
    expected_tokens: int = 4000
    token_budget_factor: float = 2.0
    max_tool_calls: int = 30
    wall_clock_s: float = 600.0
    max_cost_usd: float = 5.0
    cost_per_1k_tokens_usd: float = 0.002
    loop_threshold: int = 3
    max_consecutive_errors: int = 3
    max_transient_retries: int = 5
    context_retries: int = 1

    @property
    def max_tokens(self) -> int:
        return int(self.expected_tokens * self.token_budget_factor)


class Escalation(_Strict):
    queue: str
    sla_s: float = 3600.0


class WorkflowSpec(_Strict):
    """A declared workflow type."""

    name: str
    description: str = ""
    pattern: Literal["pipeline", "supervisor"]
    autonomy_level: Literal[1, 2, 3, 4]
    agents: list[AgentSpec]
    routes: list[Route] = Field(default_factory=list)
    budgets: Budgets = Field(default_factory=Budgets)
    confidence_thresholds: dict[str, float] = Field(default_factory=lambda: {"default": 0.5})
    escalation: Escalation

    @model_validator(mode="after")
    def _consistent(self) -> WorkflowSpec:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must be unique, got {names}")
        if not names:
            raise ValueError("a workflow declares at least one agent")
        for route in self.routes:
            for end in (route.after, route.to):
                if end != END and end not in names:
                    raise ValueError(f"route {route.after} -> {route.to} names unknown agent {end!r}; known: {names}")
        for agent in self.agents:
            if agent.fallback_agent and agent.fallback_agent not in names:
                raise ValueError(f"{agent.name}.fallback_agent {agent.fallback_agent!r} is not an agent of {self.name}")
        if self.pattern == "supervisor" and not self.routes:
            raise ValueError("the supervisor pattern needs routes")
        owners: dict[str, str] = {}
        for agent in self.agents:
            for key in sorted(agent.owned_keys()):
                if key in owners:
                    raise ValueError(
                        f"context key {key!r} is an output of both {owners[key]} and {agent.name}; "
                        "each key has one owner: rename one of them"
                    )
                owners[key] = agent.name
        return self

    def key_owners(self) -> dict[str, str]:
        """Context key -> the agent that owns it (declares it as an output or a tool's result key)."""
        return {key: agent.name for agent in self.agents for key in agent.owned_keys()}

    @property
    def first_agent(self) -> str:
        return self.agents[0].name

    def agent(self, name: str) -> AgentSpec:
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(f"workflow {self.name} has no agent {name!r}")

    def threshold_for(self, agent: AgentSpec) -> float:
        """The confidence under which the agent's decision escalates: its own, the workflow's for it, its decision
        type's (DECISION_THRESHOLDS), the workflow's default, 0.5."""
        if agent.confidence_threshold is not None:
            return agent.confidence_threshold
        if agent.name in self.confidence_thresholds:
            return self.confidence_thresholds[agent.name]
        if agent.decision_type in DECISION_THRESHOLDS:
            return DECISION_THRESHOLDS[agent.decision_type]
        return self.confidence_thresholds.get("default", 0.5)

    def needs_approval(self, tool: ToolSpec, arguments: Mapping[str, Any]) -> bool:
        """Whether a tool call waits for a human, by autonomy level and the tool's own rule.

        1 human-in-the-loop: every call that changes anything; 2 human-on-the-loop: every
        irreversible call; 3 human-by-exception and 4 autonomous: the tool's declared rule. Deletions and
        regulatory filings always.
        """
        if tool.decision_type in ALWAYS_APPROVED_DECISIONS:
            return True
        if self.autonomy_level == 1 and tool.tier is not PermissionTier.READ:
            return True
        if self.autonomy_level == 2 and tool.tier is PermissionTier.IRREVERSIBLE:
            return True
        return tool.approval is not None and tool.approval.required(arguments)

    def next_agent(self, after: str, context: Mapping[str, Any]) -> str:
        """Where the workflow goes after an agent: the next agent's name, or END."""
        if self.pattern == "pipeline":
            names = [a.name for a in self.agents]
            i = names.index(after)
            return names[i + 1] if i + 1 < len(names) else END
        for route in self.routes:
            if route.after == after and (route.when is None or route.when.holds(context)):
                return route.to
        return END


def reviewers_declared() -> bool:
    """Whether the declarations hold reviewers.yaml: humans decide approvals here, so supervisors wait for them
    by default."""
    return (default_workflow_dir() / REVIEWERS_FILE).is_file()


class WorkflowDeclarationError(ValueError):
    """A workflow file does not declare a valid workflow."""


def load_workflow(path: Path) -> WorkflowSpec:
    """Load and validate one YAML declaration."""
    try:
        data = yaml.safe_load(path.read_text())
        return WorkflowSpec.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise WorkflowDeclarationError(f"{path}: {exc}") from exc


def default_workflow_dir() -> Path:
    env = os.environ.get("BATON_WORKFLOW_DIR")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        if (parent / "workflows").is_dir() and (parent / "schemas").is_dir():
            return parent / "workflows"
    raise WorkflowDeclarationError("cannot find workflows/; set BATON_WORKFLOW_DIR")


@cache
def load_workflows(directory: Path | None = None) -> dict[str, WorkflowSpec]:
    """Every *.yaml under the workflow directory, by workflow name."""
    paths = sorted((directory or default_workflow_dir()).glob("*.yaml"))
    specs = [load_workflow(p) for p in paths if p.name not in (TOOL_PACK_FILE, TENANTS_FILE, REVIEWERS_FILE)]
    return {s.name: s for s in specs}


def agent_kinds(workflows: Mapping[str, WorkflowSpec]) -> dict[str, AgentSpec]:
    """Every agent kind across workflows (a kind name must mean one agent everywhere)."""
    kinds: dict[str, AgentSpec] = {}
    for wf in workflows.values():
        for agent in wf.agents:
            if agent.name in kinds and kinds[agent.name] != agent:
                raise WorkflowDeclarationError(f"agent {agent.name!r} is declared differently in two workflows")
            kinds[agent.name] = agent
    return kinds
