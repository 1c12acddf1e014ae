"""The policy guard's verdict on one tool call: pure rules over the declarations, the policies and the accounts.

Order of the checks (the first that refuses decides, so the reason names one thing to fix):
the request is well formed (arguments parse, their hash and the idempotency key match the call) -> the agent is
declared -> the tool exists and the agent's declaration grants it -> no argument names another tenant's record ->
the agent's tool-call rate -> the Cedar policies (tier, autonomy level, approval rules, and whether the request
shows a human's approval of exactly this action; default deny) -> the
tenant's daily spend (the call's cost is reserved against the limit) -> a grant signed with the guard's identity,
bound to exactly this call, single use, with an expiry.

No broker imports: the guard service feeds requests in and publishes what comes out.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from baton.approvals.model import ActionBinding
from baton.context import context_sha256
from baton.contracts.models import FailureClass, PermissionTier
from baton.handoff import tool_call_prefix
from baton.identity import Identity, Keyring
from baton.policy.decisions import Policies, ToolCallFacts, Verdict
from baton.policy.grants import (
    GrantRefusedError,
    SignedGrant,
    StepTicket,
    check_approval_token,
    check_ticket,
    issue_grant,
)
from baton.policy.ownership import ResourceOwners, cross_tenant
from baton.policy.rates import SlidingWindowLimiter
from baton.policy.sanitize import QueryRefusedError, tables_outside
from baton.policy.spend import SpendAccounts, SpendAlert, SpendVerdict, utc_day
from baton.policy.tenants import Prices
from baton.workflows import AgentSpec, ApprovalRule, ToolSpec, WorkflowSpec

_KEY_SUFFIX = re.compile(r"v(?P<version>[0-9]+)\.(?P<ordinal>[0-9]+)")


@dataclass(frozen=True)
class ToolAsk:
    """A tool-call request as the guard decides on it (from ToolCallRequested and its envelope)."""

    call_id: str
    workflow_id: str
    tenant_id: str
    agent: str
    tool: str
    arguments_json: str
    arguments_sha256: str
    idempotency_key: str
    step_version: int
    step_ticket: str = ""
    # What a reviewer reads if the call waits for a human (from the agent; the guard decides on none of it).
    rationale: str = ""
    confidence: float | None = None
    decision_type: str | None = None
    preview_json: str | None = None
    lineage: tuple[str, ...] = ()
    bound_from_json: str = "{}"
    # A human's approval of exactly this action (the approval service's signed token), when resumed after one.
    approval_token: str = ""


@dataclass(frozen=True)
class ApprovalAsk:
    """What the guard asks humans to approve: this exact action, by whom, until when, and what if nobody does."""

    approval_id: str
    action: ActionBinding
    workflow_type: str
    reason: str
    tier: PermissionTier
    required_approvals: int
    queue: str
    expires_at: float
    requested_at: float
    on_expiry: Literal["reject", "escalate"]
    escalate_to: str | None
    requested_by: str = ""  # who submitted the task (from the supervisor's step ticket)


@dataclass(frozen=True)
class GuardVerdict:
    """Authorized (with its grant) or denied (with a code the agent can act on and how the step should end)."""

    call_id: str
    authorized: bool
    code: str
    reason: str
    policy_version: str
    policies: tuple[str, ...] = ()
    tier: PermissionTier | None = None
    grant: SignedGrant | None = None
    cost_usd: float = 0.0
    # None: a human decides (approval required, or a refusal the step cannot work around on its own).
    failure_class: FailureClass | None = FailureClass.LOGIC
    approval: ApprovalAsk | None = None
    alerts: tuple[SpendAlert, ...] = ()
    rate_limited: bool = False


class ToolCallGuard:
    """Decides tool calls; remembers recent verdicts by call id, so a redelivered request gets the same one."""

    def __init__(
        self,
        *,
        workflows: Mapping[str, WorkflowSpec],
        policies: Policies,
        signer: Identity,
        keyring: Keyring | None,
        spend: SpendAccounts | None,
        prices: Prices,
        rate: SlidingWindowLimiter,
        owners: ResourceOwners | None = None,
        grant_ttl_s: float = 60.0,
        approval_ttl_s: float | None = None,
        remember: int = 10_000,
    ) -> None:
        self._policies = policies
        self._signer = signer
        # The keyring step tickets are checked against (None: not checked; only unit tests of other rules).
        self._keyring = keyring
        self._spend = spend
        self._prices = prices
        self._rate = rate
        self._owners = owners
        self._grant_ttl_s = grant_ttl_s
        self._approval_ttl_s = approval_ttl_s
        self._remember = remember
        self._recent: OrderedDict[str, GuardVerdict] = OrderedDict()
        self._agents: dict[str, tuple[WorkflowSpec, AgentSpec]] = {
            a.name: (w, a) for w in workflows.values() for a in w.agents
        }
        self._declared_tools = {t.name for w in workflows.values() for a in w.agents for t in a.tools}
        # What an approval is also bound to besides the Cedar policies: the tool's declaration (tier, approval
        # rule, pinned version) and the workflow's autonomy level; an approval given under other rules does not
        # apply under these.
        self._rules_version = {
            (a.name, t.name): context_sha256(
                {"tool": t.model_dump(mode="json"), "autonomy": w.autonomy_level, "workflow": w.name}
            )[:16]
            for w in workflows.values()
            for a in w.agents
            for t in a.tools
        }

    @property
    def policy_version(self) -> str:
        return self._policies.version

    @property
    def spend(self) -> SpendAccounts | None:
        """The tenants' daily accounts (None: no tenants declared, nothing is charged or limited)."""
        return self._spend

    async def decide(self, ask: ToolAsk, *, now: float) -> GuardVerdict:
        """The verdict on a request (the remembered one for a call id seen before)."""
        seen = self._recent.get(ask.call_id)
        if seen is not None:
            self._recent.move_to_end(ask.call_id)
            return seen
        verdict = await self._decide(ask, now)
        self._recent[ask.call_id] = verdict
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return verdict

    def refuse(self, ask: ToolAsk, code: str, reason: str) -> GuardVerdict:
        """A refusal decided outside the rules (the kill switch): SYSTEMIC, not remembered (a resume lifts it)."""
        return self._deny(ask, code, reason, failure_class=FailureClass.SYSTEMIC)

    def _deny(
        self,
        ask: ToolAsk,
        code: str,
        reason: str,
        *,
        failure_class: FailureClass | None = FailureClass.LOGIC,
        policies: tuple[str, ...] = (),
        tier: PermissionTier | None = None,
        **extra: Any,
    ) -> GuardVerdict:
        return GuardVerdict(
            ask.call_id,
            False,
            code,
            reason,
            self._policies.version,
            policies,
            tier,
            failure_class=failure_class,
            **extra,
        )

    async def _decide(self, ask: ToolAsk, now: float) -> GuardVerdict:
        arguments, problem = _parsed(ask)
        if problem:
            return self._deny(ask, "BAD_REQUEST", problem)
        assert arguments is not None
        ticket: StepTicket | None = None
        if self._keyring is not None:
            expected = {
                "workflow_id": ask.workflow_id,
                "tenant_id": ask.tenant_id,
                "agent": ask.agent,
                "step_version": ask.step_version,
            }
            try:
                ticket = check_ticket(ask.step_ticket, self._keyring, expected=expected, now=now)
            except GrantRefusedError as exc:
                return self._deny(ask, exc.code, str(exc), failure_class=FailureClass.SYSTEMIC)
        owner = self._agents.get(ask.agent)
        if owner is None:
            return self._deny(
                ask,
                "UNKNOWN_AGENT",
                f"no workflow declares an agent {ask.agent!r}: only declared agents may call tools",
                failure_class=FailureClass.SYSTEMIC,
            )
        workflow, agent = owner
        spec = agent.tool(ask.tool)
        if spec is None:
            if ask.tool not in self._declared_tools:
                return self._deny(
                    ask,
                    "UNKNOWN_TOOL",
                    f"there is no tool {ask.tool!r}; {agent.name} may call {[t.name for t in agent.tools]}",
                )
            return self._deny(
                ask,
                "NOT_GRANTED",
                f"{agent.name} is not granted {ask.tool!r} (another agent's tool); its declaration grants "
                f"{[t.name for t in agent.tools]}: an agent acts only within its own tools",
            )
        crossing = cross_tenant(arguments, ask.tenant_id, self._owners) if self._owners is not None else []
        if crossing:
            facts = self._facts(ask, workflow, spec, arguments, cross_tenant=True)
            decided = self._policies.decide(facts)
            return self._deny(
                ask,
                "CROSS_TENANT",
                f"{ask.tool} for tenant {ask.tenant_id!r} names another tenant's record ({'; '.join(crossing)}): "
                "denied before anything ran; a workflow acts only on its own tenant's records",
                failure_class=None,  # a hard error: a human looks, no agent is tried instead
                policies=decided.policies,
                tier=spec.tier,
            )
        if spec.query is not None:
            outside = _query_problem(arguments, spec.query.argument, spec.query.tables)
            if outside:
                return self._deny(ask, "TABLE_NOT_ALLOWED", f"{ask.tool}: {outside}", tier=spec.tier)
        rate_key = f"{ask.workflow_id}:{ask.agent}"
        if not self._rate.allow(rate_key, now):
            return self._deny(
                ask,
                "RATE_LIMITED",
                f"{agent.name} made more than {self._rate.limit} tool calls in {self._rate.window_s:.0f} s in workflow "
                f"{ask.workflow_id}: halted as a runaway agent; a human looks before it runs again",
                failure_class=FailureClass.SYSTEMIC,
                tier=spec.tier,
                rate_limited=True,
            )
        action = ActionBinding(
            workflow_id=ask.workflow_id,
            tenant_id=ask.tenant_id,
            agent=ask.agent,
            tool=ask.tool,
            arguments_json=ask.arguments_json,
            arguments_sha256=ask.arguments_sha256,
            idempotency_key=ask.idempotency_key,
            context_sha256=ticket.context_sha256 if ticket is not None else "",
            policy_version=f"{self._policies.version}+rules:{self._rules_version[(agent.name, spec.name)]}",
            step_version=ask.step_version,
        )
        approved, not_approved = self._approved(ask, action, now)
        facts = self._facts(ask, workflow, spec, arguments, cross_tenant=False, approved=approved)
        decided = self._policies.decide(facts)
        if decided.verdict is Verdict.APPROVAL_REQUIRED:
            approval = self._approval_ask(action, workflow, spec, decided.reason, now)
            if ticket is not None:
                approval = replace(approval, requested_by=ticket.requested_by)
            why = f"{decided.reason}; {not_approved}" if not_approved else decided.reason
            return self._deny(
                ask,
                "APPROVAL_REQUIRED",
                f"{why}; its bound arguments {ask.arguments_json} wait for a human (approval "
                f"{approval.approval_id} in queue {approval.queue}, {approval.required_approvals} reviewer(s))",
                failure_class=None,
                policies=decided.policies,
                tier=spec.tier,
                approval=approval,
            )
        if decided.verdict is Verdict.DENIED:
            return self._deny(ask, "POLICY_DENIED", decided.reason, policies=decided.policies, tier=spec.tier)
        cost = self._prices.tool_call_usd(ask.tool)
        alerts: list[SpendAlert] = []
        if self._spend is not None:
            day = utc_day(now)
            if cost > 0:
                # Reserved and settled in one atomic change, once per idempotency key (a call re-asked after its
                # grant was lost with a crashed agent costs once); a call that then fails still counts, so the
                # day is spent conservatively and never past the limit.
                spent, why, alerts = await self._spend.spend_within_limit(ask.idempotency_key, ask.tenant_id, day, cost)
            else:
                # A free call writes nothing; it is still refused once the tenant's day is spent.
                exhausted = await self._spend.exhausted(ask.tenant_id, day)
                spent = SpendVerdict.OVER_LIMIT if exhausted else SpendVerdict.RESERVED
                why = (
                    f"tenant {ask.tenant_id!r} has spent its daily limit: stopped until tomorrow or a higher limit"
                    if self._spend.limit_of(ask.tenant_id) is not None
                    else f"tenant {ask.tenant_id!r} has no spend limit configured (tenants.yaml): nothing is spent"
                )
            if spent is SpendVerdict.OVER_LIMIT:
                return self._deny(
                    ask,
                    "SPEND_LIMIT",
                    why,
                    failure_class=FailureClass.SYSTEMIC,
                    policies=decided.policies,
                    tier=spec.tier,
                )
        grant = issue_grant(
            self._signer,
            ttl_s=self._grant_ttl_s,
            now=now,
            workflow_id=ask.workflow_id,
            tenant_id=ask.tenant_id,
            agent=ask.agent,
            step_version=ask.step_version,
            tool=ask.tool,
            arguments_sha256=ask.arguments_sha256,
            idempotency_key=ask.idempotency_key,
            policy_version=self._policies.version,
        )
        return GuardVerdict(
            ask.call_id,
            True,
            "AUTHORIZED",
            decided.reason,
            self._policies.version,
            decided.policies,
            spec.tier,
            grant=grant,
            cost_usd=cost,
            failure_class=None,
            alerts=tuple(alerts),
        )

    def _facts(
        self,
        ask: ToolAsk,
        workflow: WorkflowSpec,
        spec: ToolSpec,
        arguments: Mapping[str, Any],
        *,
        cross_tenant: bool,
        approved: bool = False,
    ) -> ToolCallFacts:
        return ToolCallFacts(
            agent=ask.agent,
            tool=ask.tool,
            tier=spec.tier,
            tenant_id=ask.tenant_id,
            workflow_type=workflow.name,
            granted=True,
            needs_approval=workflow.needs_approval(spec, arguments),
            cross_tenant=cross_tenant,
            approved=approved,
        )

    def _approved(self, ask: ToolAsk, action: ActionBinding, now: float) -> tuple[bool, str]:
        """Whether the request shows a human approval of exactly this action (and, if it shows one that does not
        hold, why: the reviewer reads it with the new approval asked)."""
        if not ask.approval_token or self._keyring is None:
            return False, ""
        try:
            check_approval_token(ask.approval_token, self._keyring, action_digest=action.digest(), now=now)
        except GrantRefusedError as exc:
            return False, f"the approval shown does not apply ({exc})"
        return True, ""

    def _approval_ask(
        self, action: ActionBinding, workflow: WorkflowSpec, spec: ToolSpec, reason: str, now: float
    ) -> ApprovalAsk:
        rule = spec.approval or ApprovalRule()
        sla = self._approval_ttl_s or rule.sla_s or workflow.escalation.sla_s
        return ApprovalAsk(
            approval_id=approval_id_of(action),
            action=action,
            workflow_type=workflow.name,
            reason=reason,
            tier=spec.tier,
            required_approvals=rule.approvers,
            queue=rule.queue or workflow.escalation.queue,
            expires_at=now + sla,
            requested_at=now,
            on_expiry=rule.on_expiry,
            escalate_to=rule.escalate_to,
        )

    async def charge_tokens(
        self, charge_id: str, tenant_id: str, agent: str, tokens: int, *, now: float
    ) -> list[SpendAlert]:
        """Spend for model tokens already used (a model call cannot be un-spent): counted once per charge id, at
        the price of the agent's declared model."""
        owner = self._agents.get(agent)
        model = owner[1].model.name if owner is not None and owner[1].model is not None else "scripted"
        amount = self._prices.model_cost_usd(model, tokens)
        if amount <= 0 or self._spend is None:
            return []
        return await self._spend.charge(charge_id, tenant_id, utc_day(now), amount)


def approval_id_of(action: ActionBinding) -> str:
    """An approval's id: from the action's digest, so a redelivered request asks for the same approval and a
    changed action for a new one."""
    return "ap-" + action.digest()[:24]


def _query_problem(arguments: Mapping[str, Any], argument: str, allowed: list[str]) -> str:
    """What is wrong with a query tool's SQL against its table allow-list ("" when nothing)."""
    query = arguments.get(argument)
    if not isinstance(query, str):
        return f"argument {argument!r} must hold the SQL query (a string); nothing ran"
    try:
        outside = tables_outside(query, allowed)
    except QueryRefusedError as exc:
        return f"the query cannot be checked: {exc}"
    if outside:
        return f"the query touches {outside}, outside the tables it may use {sorted(allowed)}; nothing ran"
    return ""


def _parsed(ask: ToolAsk) -> tuple[dict[str, Any] | None, str]:
    """The arguments, or what is wrong with the request (nothing runs on a request the guard cannot read)."""
    try:
        arguments = json.loads(ask.arguments_json)
    except ValueError as exc:
        return None, f"arguments_json is not JSON ({exc}): send the arguments as a JSON object"
    if not isinstance(arguments, dict):
        return None, f"arguments_json must be a JSON object, got {type(arguments).__name__}"
    try:
        digest = context_sha256(arguments)
    except ValueError as exc:
        return None, f"the arguments cannot be canonicalised ({exc})"
    if digest != ask.arguments_sha256:
        return None, (
            f"arguments_sha256 {ask.arguments_sha256[:12] or '(empty)'}… does not match the arguments "
            f"({digest[:12]}…): the hash is over their RFC 8785 canonical JSON"
        )
    prefix = tool_call_prefix(ask.workflow_id, ask.agent, ask.tool)
    suffix = _KEY_SUFFIX.fullmatch(ask.idempotency_key.removeprefix(prefix))
    if not ask.idempotency_key.startswith(prefix) or suffix is None:
        return None, (
            f"idempotency key {ask.idempotency_key!r} is not this call's: it must be "
            f"'{prefix}v<step version>.<n>' (the workflow, agent and tool asking)"
        )
    if int(suffix["version"]) != ask.step_version:
        return None, f"idempotency key {ask.idempotency_key!r} names step v{suffix['version']}, not v{ask.step_version}"
    return arguments, ""
