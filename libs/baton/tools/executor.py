"""How one step's tool calls run: validated by the registry, keyed per step, recorded in Baton's own ledger.

A write's idempotency key names the step, not the arguments: `workflow:agent:tool:v<context version>.<n>` for
the n-th distinct call of that tool in the step. A redelivered, retried or re-run step therefore reaches the same key:
with the same arguments it gets the first result and the tool is not called again; with other arguments (a
model that chose differently on the re-run) the step escalates as diverged rather than act twice
(docs/decisions/0013-write-keys-name-the-step.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from baton.context import canonical_bytes, context_sha256
from baton.contracts.models import FailureClass, PermissionTier
from baton.handoff import tool_call_key
from baton.identity import Keyring
from baton.ledger import Ledger
from baton.policy.grants import GrantRefusedError, SignedGrant, check_grant
from baton.policy.injection import InjectionFlag
from baton.policy.sanitize import Finding
from baton.policy.screening import OutputScreen, Screened
from baton.tools.base import ToolError
from baton.tools.registry import ToolRegistry
from baton.workflows import ToolSpec

# Failures that promise the tool did not act: nothing reached it, or it refused before acting.
_DID_NOT_ACT = frozenset({"UNREACHABLE", "RATE_LIMITED", "BAD_ARGUMENTS", "UNKNOWN_TOOL"})
# LOGIC failures after which it may have acted anyway: it ran and its answer was refused, or it crashed.
_ACTED_THEN_FAILED = frozenset({"BAD_RESULT", "RESULT_TOO_LARGE", "TOOL_FAILED"})


def may_have_acted(exc: ToolError) -> bool:
    """Whether a failed call may have had its effect: every transient failure but a connection never made (time-outs,
    5xx, a connection lost mid-call, anything unknown), and a result refused after the tool ran. A LOGIC refusal
    by the tool itself (a 4xx, its own ToolError) means it did not act."""
    if exc.code in _DID_NOT_ACT:
        return False
    return exc.failure_class is FailureClass.TRANSIENT or exc.code in _ACTED_THEN_FAILED


class NeedsHumanError(ToolError):
    """A write that Baton will not run (again) on its own: a human decides (the step escalates)."""


class GuardDeniedError(ToolError):
    """The policy guard refused the call; nothing ran. `escalate`: a human decides (e.g. approval required)."""

    def __init__(
        self, code: str, message: str, failure_class: FailureClass | None, *, approval_id: str | None = None
    ) -> None:
        super().__init__(code, message, failure_class or FailureClass.LOGIC)
        self.escalate = failure_class is None
        self.approval_id = approval_id


@dataclass(frozen=True)
class CallToAsk:
    """One call the agent wants to make, as the guard needs to see it."""

    workflow_id: str
    tenant_id: str
    agent: str
    tool: str
    arguments: Mapping[str, Any]
    idempotency_key: str
    step_version: int
    step_ticket: str = ""
    review: CallReview | None = None
    lineage: tuple[str, ...] = ()
    approval_token: str = ""


# A tool's dry run is registered beside it under this suffix (StepTools.preview), and shown up to this size.
PREVIEW_SUFFIX = "__preview"
MAX_PREVIEW_BYTES = 16_384


@dataclass(frozen=True)
class CallReview:
    """What a human reviewing the call would read: why the agent chose it, how sure it is, where each argument
    came from, and the tool's dry run of what would change (when approval may be asked)."""

    rationale: str = ""
    confidence: float | None = None
    decision_type: str | None = None
    bound_from: Mapping[str, str] = field(default_factory=dict)
    preview: Mapping[str, Any] | None = None


class Authorizer(Protocol):
    """Asks the policy guard (baton.guard_client.GuardClient): its grant, or GuardDeniedError."""

    async def ask(self, call: CallToAsk) -> SignedGrant: ...


def arguments_sha256(arguments: Mapping[str, Any]) -> str:
    return context_sha256(dict(arguments))


@dataclass(frozen=True)
class ToolRun:
    """A call's result (screened) and the key it ran (or was replayed) under; what the screen redacted (reported
    when the call ran) and flagged (on every run: a replayed result is screened again)."""

    key: str
    result: dict[str, Any]
    replayed: bool = False
    redactions: tuple[Finding, ...] = ()
    injections: tuple[InjectionFlag, ...] = ()


class ToolGate(Protocol):
    """Whether a tool may run now (the kill switch, see baton.control): raises ToolError when not."""

    def check(self) -> None: ...

    def running(self) -> contextlib.AbstractContextManager[None]:
        """Check, and hold the call as in flight until it returns."""
        ...


@dataclass(frozen=True)
class StepTools:
    """The tools of one step, as the agent runtime calls them."""

    registry: ToolRegistry
    ledger: Ledger
    workflow_id: str
    agent: str
    tenant_id: str
    step_version: int
    # Given: every call that would run needs the policy guard's grant for exactly it (checked here, where the
    # tool runs, and used once); a replayed write runs nothing and needs none.
    grants: Keyring | None = None
    # The supervisor's signed ticket of this step (StepRequested.ticket), shown to the guard with every call.
    step_ticket: str = ""
    # Given: checked before anything is recorded and again right before each invocation (docs/decisions/0016).
    gate: ToolGate | None = None
    # Given: the guard is asked for each call that would run, and its grant is what runs it (requires grants).
    authorizer: Authorizer | None = None
    # Given: each result is redacted and screened before it is recorded or returned (baton.policy.screening).
    screen: OutputScreen | None = None
    # The agents that ran before this step (shown to a reviewer), and the approval this step resumes with.
    lineage: tuple[str, ...] = ()
    approval_token: str = ""

    def __post_init__(self) -> None:
        if self.authorizer is not None and self.grants is None:
            raise ValueError("StepTools with an authorizer needs the keyring (grants) its grants are checked against")

    @property
    def guarded(self) -> bool:
        """Whether the policy guard decides this step's calls (approval included)."""
        return self.authorizer is not None

    async def refused(
        self, tool: str, arguments: Mapping[str, Any], ordinal: int, review: CallReview | None = None
    ) -> ToolError | None:
        """Ask the guard about a call that will not run (so its verdict is on record): its refusal, or None when it
        would have permitted it (the grant is never used)."""
        if self.authorizer is None:
            return None
        try:
            await self.authorizer.ask(self._ask(tool, arguments, self.key(tool, ordinal), review))
        except ToolError as exc:
            return exc
        return None

    async def preview(self, spec: ToolSpec, arguments: Mapping[str, Any], ordinal: int = 0) -> dict[str, Any] | None:
        """The tool's dry run of a call, for a human who may have to approve it: the registered tool
        `<name>__preview` (any provider; declared READ, side-effect free by contract: it shows what would change),
        called with the same arguments under the kill switch's gate, its result redacted and screened like any
        tool's. None when there is none, it fails, or it is too large to show (the reviewer then reads the
        arguments' plan). It does not ask the guard: it reads, and its result only travels to the reviewer."""
        name = f"{spec.name}{PREVIEW_SUFFIX}"
        declared = self.registry.get(name)
        if declared is None or declared.tier is not PermissionTier.READ:
            return None  # a "preview" that may change something is never run to show a reviewer
        if self.gate is not None:
            self.gate.check()
        try:
            self.registry.check_arguments(name, arguments)
            shown = await self._screened(
                await self._invoke(name, arguments, f"{self.key(spec.name, ordinal)}{PREVIEW_SUFFIX}", None)
            )
        except ToolError:
            return None
        result = shown.result
        if not isinstance(result, dict) or shown.injections or len(canonical_bytes(result)) > MAX_PREVIEW_BYTES:
            return None  # instructions in it, or too big to read: the plan of arguments is what is shown
        return result

    def _ask(self, tool: str, arguments: Mapping[str, Any], key: str, review: CallReview | None) -> CallToAsk:
        return CallToAsk(
            workflow_id=self.workflow_id,
            tenant_id=self.tenant_id,
            agent=self.agent,
            tool=tool,
            arguments=arguments,
            idempotency_key=key,
            step_version=self.step_version,
            step_ticket=self.step_ticket,
            review=review,
            lineage=self.lineage,
            approval_token=self.approval_token,
        )

    def key(self, tool: str, ordinal: int) -> str:
        """The idempotency key of the ordinal-th call (from 0) of a tool in this step."""
        return tool_call_key(self.workflow_id, self.agent, tool, step_version=self.step_version, ordinal=ordinal)

    async def run(
        self,
        spec: ToolSpec,
        arguments: Mapping[str, Any],
        ordinal: int,
        grant: SignedGrant | None = None,
        review: CallReview | None = None,
    ) -> ToolRun:
        """Run a call (or replay its recorded result); ToolError when it fails, NeedsHumanError when unsafe."""
        if self.gate is not None:
            self.gate.check()
        key = self.key(spec.name, ordinal)
        declaration = self.registry.declaration(spec.name)
        self.registry.check_arguments(spec.name, arguments)  # nothing is recorded for a call that cannot run
        if spec.tier is PermissionTier.READ:
            used = await self._authorized(spec, arguments, key, grant, review)
            screened = await self._screened(await self._invoke(spec.name, arguments, key, used))
            await asyncio.to_thread(
                self.ledger.record_receipt, key, tool=spec.name, result_sha256=context_sha256(screened.result)
            )
            return ToolRun(key, screened.result, False, screened.redactions, screened.injections)
        digest = arguments_sha256(arguments)
        before = await asyncio.to_thread(
            self.ledger.call_started, key, workflow_id=self.workflow_id, tool=spec.name, arguments_sha256=digest
        )
        if before is not None and before.arguments_sha256 != digest:
            raise NeedsHumanError(
                "WRITE_DIVERGED",
                f"{spec.name} already ran in an earlier run of this step (key {key}) with other arguments; this "
                "run chose different ones. Baton does not act twice: a human compares the two and decides",
            )
        if before is not None and before.done and before.result is not None:
            await asyncio.to_thread(self.ledger.call_replayed, key)
            again = await self._screened(before.result)  # recorded redacted; flagged again, never fed on
            return ToolRun(key, before.result, True, (), again.injections)
        try:
            used = await self._authorized(spec, arguments, key, grant, review)
        except BaseException:
            # Refused, denied, no verdict in time, or stopped while asking: nothing ran, so the intent just written
            # is withdrawn (left, it would make a redelivered step escalate EFFECT_UNKNOWN for a call never made).
            if before is None:
                await asyncio.to_thread(self.ledger.call_refused, key)
            raise
        if before is not None and not declaration.idempotent:
            raise NeedsHumanError(
                "EFFECT_UNKNOWN",
                f"{spec.name} was called under key {key} before and its outcome was never recorded (the process "
                "stopped, or the call failed in a way that may have acted); it is not declared idempotent, so "
                "Baton will not call it again: check whether it acted, then resume or close the workflow",
            )
        if before is not None:
            await asyncio.to_thread(self.ledger.call_retried, key)
        try:
            result = await self._invoke(spec.name, arguments, key, used)
        except ToolError as exc:
            if not may_have_acted(exc):
                await asyncio.to_thread(self.ledger.call_refused, key)  # it did not act: a retry may run it
                raise
            if declaration.idempotent:
                raise  # the intent stays: a retry calls again under the same key, which the tool honours
            raise NeedsHumanError(
                "EFFECT_UNKNOWN",
                f"{spec.name} failed in a way that may have acted ({exc.code}: {exc}); it is not declared "
                "idempotent, so it is not retried: check whether it acted, then resume or close the workflow",
            ) from exc
        screened = await self._screened(result)
        await asyncio.to_thread(
            self.ledger.call_done, key, screened.result, tool=spec.name, result_sha256=context_sha256(screened.result)
        )
        return ToolRun(key, screened.result, False, screened.redactions, screened.injections)

    async def _screened(self, result: dict[str, Any]) -> Screened:
        if self.screen is None:
            return Screened(result)
        return await asyncio.to_thread(self.screen.screen, result)

    async def _authorized(
        self,
        spec: ToolSpec,
        arguments: Mapping[str, Any],
        key: str,
        grant: SignedGrant | None,
        review: CallReview | None,
    ) -> SignedGrant | None:
        """The grant the call runs with (checked and used up here; passed on to a tool that checks it again)."""
        if grant is None and self.authorizer is not None:
            grant = await self.authorizer.ask(self._ask(spec.name, arguments, key, review))
        if self.grants is None:
            return grant
        expected = {
            "workflow_id": self.workflow_id,
            "tenant_id": self.tenant_id,
            "agent": self.agent,
            "step_version": self.step_version,
            "tool": spec.name,
            "arguments_sha256": arguments_sha256(arguments),
            "idempotency_key": key,
        }
        checked = check_grant(grant, self.grants, expected=expected, now=time.time())
        if not await asyncio.to_thread(self.ledger.consume_grant, checked.grant_id, key=key):
            raise GrantRefusedError(
                "GRANT_REUSED", f"the authorization for {spec.name} was used before: each one permits one call"
            )
        return grant

    async def _invoke(
        self, name: str, arguments: Mapping[str, Any], key: str, grant: SignedGrant | None
    ) -> dict[str, Any]:
        with self.gate.running() if self.gate is not None else contextlib.nullcontext():
            try:
                return await self._call(name, arguments, key, grant)
            except ToolError as exc:
                if self.screen is not None:
                    # A failure's message may quote what the tool returned (a result off its schema): redacted
                    # before it becomes the step's error in events and the audit.
                    exc.args = (await asyncio.to_thread(self.screen.redact_text, str(exc)),)
                raise

    async def _call(
        self, name: str, arguments: Mapping[str, Any], key: str, grant: SignedGrant | None
    ) -> dict[str, Any]:
        return await self.registry.invoke(
            name,
            arguments,
            idempotency_key=key,
            tenant_id=self.tenant_id,
            workflow_id=self.workflow_id,
            agent=self.agent,
            arguments_checked=True,  # run() checked them before recording anything
            grant=grant.to_json() if grant is not None else None,
        )


def escalates(exc: ToolError) -> FailureClass | None:
    """The failure class a step ends with (None: escalate to a human)."""
    if isinstance(exc, NeedsHumanError) or (isinstance(exc, GuardDeniedError) and exc.escalate):
        return None
    return exc.failure_class
