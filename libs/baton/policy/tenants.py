"""Tenants as configuration: `tenants.yaml` beside the workflow declarations (see workflows/tenants.yaml).

    tenants:
      acme: {active: true, daily_spend_limit_usd: 50, tasks_per_minute: 120, resources: {customer_id: "^acme-"}}
    ownership_hook: my_pkg.owners:owner_of      # optional, `module:function(argument, value) -> str | None`
    prices:                                     # what the guard charges a tenant's daily account, in USD
      default_model_per_1k_tokens_usd: 0.002
      models: {gpt-4o-mini: 0.0006}             # per model name, per 1000 tokens
      default_tool_call_usd: 0.0
      tools: {issue_refund: 0.01}               # per tool name, per call

Every error names the file and the field that is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from baton.workflows import TENANTS_FILE, default_workflow_dir


class TenantConfigError(ValueError):
    """A tenants file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantSpec(_Strict):
    """One tenant: whether it may run tasks, what it may spend per day, how fast it may submit tasks."""

    active: bool = True
    daily_spend_limit_usd: float = Field(ge=0)
    tasks_per_minute: int = Field(ge=0)
    # argument name -> regular expression (re.search) of the ids of this tenant's records
    resources: dict[str, str] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _patterns_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for argument, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{argument}: {pattern!r} is not a regular expression ({exc})") from exc
        return value


class Prices(_Strict):
    """The guard's prices in USD: models per 1000 tokens, tools per call."""

    default_model_per_1k_tokens_usd: float = Field(default=0.002, ge=0)
    models: dict[str, float] = Field(default_factory=dict)
    default_tool_call_usd: float = Field(default=0.0, ge=0)
    tools: dict[str, float] = Field(default_factory=dict)

    @field_validator("models", "tools")
    @classmethod
    def _not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        if negative := sorted(k for k, v in value.items() if v < 0):
            raise ValueError(f"negative prices for {negative}: a price is 0 or more")
        return value

    def model_cost_usd(self, model: str | None, tokens: int) -> float:
        """What `tokens` tokens of `model` cost (the default price for an unlisted or unnamed model)."""
        per_1k = self.models.get(model or "", self.default_model_per_1k_tokens_usd)
        return tokens / 1000 * per_1k

    def tool_call_usd(self, tool: str) -> float:
        """What one call of `tool` costs."""
        return self.tools.get(tool, self.default_tool_call_usd)


class TenantsConfig(_Strict):
    """Every tenant by id, the optional ownership hook, and the guard's prices."""

    tenants: dict[str, TenantSpec]
    ownership_hook: str | None = None
    prices: Prices = Field(default_factory=Prices)

    @field_validator("ownership_hook")
    @classmethod
    def _module_function(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:\w+", value):
            raise ValueError(f"{value!r} is not `module:function` (e.g. my_pkg.owners:owner_of)")
        return value

    def tenant(self, tenant_id: str) -> TenantSpec | None:
        return self.tenants.get(tenant_id)

    def daily_limits_usd(self) -> dict[str, float]:
        """Each tenant's daily spend limit, as the spend accounts take it."""
        return {t: spec.daily_spend_limit_usd for t, spec in self.tenants.items()}


def _where(loc: Sequence[int | str]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(the whole file)"


def parse_tenants(text: str, *, source: str = TENANTS_FILE) -> TenantsConfig:
    """Tenants from YAML text; TenantConfigError naming `source` and each field that is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TenantConfigError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TenantConfigError(
            f"{source} must be a mapping with keys tenants, ownership_hook and prices, not a {type(data).__name__}"
        )
    try:
        return TenantsConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise TenantConfigError(f"{source} is not a valid tenants file: {problems}") from exc


def load_tenants(path: str | Path | None = None) -> TenantsConfig:
    """Read and check a tenants file (default: tenants.yaml in the workflow directory)."""
    file = Path(path) if path is not None else default_workflow_dir() / TENANTS_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TenantConfigError(
            f"cannot read tenants file {file}: {exc.strerror or exc}; put {TENANTS_FILE} beside the workflow "
            "declarations (BATON_WORKFLOW_DIR) or pass its path"
        ) from exc
    return parse_tenants(text, source=str(file))


def load_tenants_if_present(path: str | Path | None = None) -> TenantsConfig | None:
    """The tenants file given, or tenants.yaml beside the workflows if there is one (None: there is none, a
    single-tenant deployment). A given path that cannot be read is an error."""
    if path is None and not (default_workflow_dir() / TENANTS_FILE).is_file():
        return None
    return load_tenants(path)
