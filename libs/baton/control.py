"""The kill switch: the state every service folds from the control topic, and the listener that keeps it.

`ControlState` is pure: the fold of every `ControlCommand` seen (everything, tenants and workflows halted;
RESUME lifts exactly the scope it names). `ControlListener` reads the control topic in every process
(no consumer group: every partition from the start, so a replica started later knows the state too),
applies each command, runs the service's hook (the supervisor halts its running workflows in scope, an
agent waits for its tool calls in flight) and then publishes one `ControlConfirmed` per command per
process. `issue` is what `baton kill` and `baton resume` run: publish the command as the operator, then
collect the confirmations (docs/decisions/0016-kill-switch.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from baton import identity, topics
from baton.bus.base import BusRecord, Subscription
from baton.contracts.models import (
    ControlAction,
    ControlCommand,
    ControlConfirmed,
    ControlScope,
    Envelope,
    Event,
    FailureClass,
    stable_event_id,
)
from baton.contracts.serde import DecodeError
from baton.identity import AuthenticationError
from baton.messaging import EventBus, EventConsumer, misplaced, unauthorized
from baton.tools.base import ToolError

log = logging.getLogger(__name__)

# The reason code of a workflow the kill switch ended, and of a step or tool call it refused.
KILLED = "KILLED"
# Envelope ids of commands that name no single workflow: their key, so one scope's commands stay in order.
ALL_KEY = "control:all"
ANY_TENANT = "*"


def tenant_key(tenant_id: str) -> str:
    """The envelope workflow id (and so the key) of a command on one tenant."""
    return f"control:tenant:{tenant_id}"


def command_envelope(
    scope: ControlScope, target: str | None, *, producer: str, event_id: str | None = None
) -> Envelope:
    """The envelope of a command: keyed by what it targets, so HALT and RESUME of one scope stay in order, and
    a workflow's command lands in that workflow's audit chain."""
    if (scope is ControlScope.ALL) != (target is None):
        raise ValueError(f"scope {scope.value} {'takes no' if target is not None else 'needs a'} target")
    workflow_id, tenant_id = ALL_KEY, ANY_TENANT
    if scope is ControlScope.WORKFLOW:
        assert target is not None
        workflow_id = target
    elif scope is ControlScope.TENANT:
        assert target is not None
        workflow_id, tenant_id = tenant_key(target), target
    return Envelope(
        event_id=event_id or str(uuid.uuid4()), workflow_id=workflow_id, tenant_id=tenant_id, producer=producer
    )


def in_scope(command: ControlCommand | ControlConfirmed, workflow_id: str, tenant_id: str) -> bool:
    """Whether a command applies to this workflow of this tenant."""
    if command.scope is ControlScope.ALL:
        return True
    if command.scope is ControlScope.TENANT:
        return command.target == tenant_id
    return command.target == workflow_id


def expected_confirmers(agent_kinds: Collection[str]) -> set[str]:
    """The roles that must confirm a command: every service that obeys it and every agent kind."""
    return {
        identity.SUPERVISOR,
        identity.HANDOFF_VALIDATOR,
        identity.POLICY_GUARD,
        identity.AUDITOR,
        *(identity.agent_role(k) for k in agent_kinds),
    }


@dataclass
class ControlState:
    """The fold of every control command seen: what is halted now, and why.

    Bounded: at most `capacity` halted workflow ids (and as many halted tenants); past it the oldest
    halt is forgotten first and logged. A forgotten workflow halt matters only for a workflow that had
    not started when it was killed (a running one is ended for good by its supervisor, and a finished
    workflow never runs again); a halt of everything is one flag and never forgotten.
    """

    capacity: int = 100_000
    everything: str | None = None  # the reason, while everything is halted
    tenants: OrderedDict[str, str] = field(default_factory=OrderedDict)
    workflows: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict, init=False, repr=False)
    forgotten: int = 0

    def apply(self, command: ControlCommand) -> bool:
        """Fold one command in; False when this event id was applied before (a redelivery)."""
        event_id = command.envelope.event_id
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        reason = f"killed by {command.issued_by}: {command.reason}"
        halt = command.command is ControlAction.HALT
        if command.scope is ControlScope.ALL:
            self.everything = reason if halt else None
            return True
        held = self.tenants if command.scope is ControlScope.TENANT else self.workflows
        target = command.target or ""
        if not halt:
            held.pop(target, None)
            return True
        held[target] = reason
        held.move_to_end(target)
        while len(held) > self.capacity:
            gone, _ = held.popitem(last=False)
            self.forgotten += 1
            log.warning("control state over %d halted %ss: forgot the oldest, %s", self.capacity, command.scope, gone)
        return True

    def blocked(self, workflow_id: str, tenant_id: str) -> str | None:
        """Why this workflow must not run (the command's reason), or None when nothing halts it."""
        return self.everything or self.workflows.get(workflow_id) or self.tenants.get(tenant_id)

    @property
    def quiet(self) -> bool:
        """Nothing is halted (the common case, checked first on every hot path)."""
        return self.everything is None and not self.tenants and not self.workflows


# -- tool calls ----------------------------------------------------------------------------------------


class ToolCalls:
    """An agent's tool calls in flight, per workflow: refused once a kill covers them, drained before it confirms.

    Single-threaded (one event loop): a check and its count happen with no await between them, so a call
    either started before the command was applied (and the confirmation waits for it) or is refused.
    """

    def __init__(self, state: ControlState) -> None:
        self.state = state
        self._running: Counter[tuple[str, str]] = Counter()
        self._waiting: list[tuple[ControlCommand, asyncio.Future[None]]] = []

    def blocked(self, workflow_id: str, tenant_id: str) -> str | None:
        """Why this workflow must not run (see ControlState.blocked)."""
        return self.state.blocked(workflow_id, tenant_id)

    def check(self, workflow_id: str, tenant_id: str) -> None:
        """Raise ToolError(KILLED) when the kill switch covers this workflow."""
        why = self.state.blocked(workflow_id, tenant_id)
        if why is not None:
            raise ToolError(KILLED, f"refused by the kill switch, nothing ran: {why}", FailureClass.SYSTEMIC)

    @contextlib.contextmanager
    def running(self, workflow_id: str, tenant_id: str) -> Iterator[None]:
        """Check, then count the call in flight until it returns."""
        self.check(workflow_id, tenant_id)
        key = (workflow_id, tenant_id)
        self._running[key] += 1
        try:
            yield
        finally:
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
            for command, done in self._waiting:
                if not done.done() and self.in_flight(command) == 0:
                    done.set_result(None)
            self._waiting = [(c, f) for c, f in self._waiting if not f.done()]

    def in_flight(self, command: ControlCommand) -> int:
        """Calls running now in the command's scope."""
        return sum(n for (wf, tenant), n in self._running.items() if in_scope(command, wf, tenant))

    async def drained(self, command: ControlCommand) -> int:
        """Wait until no call in the command's scope is in flight; how many were when it started waiting."""
        waited = self.in_flight(command)
        if waited:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((command, done))
            await done
        return waited

    def gate(self, workflow_id: str, tenant_id: str) -> WorkflowToolGate:
        """The gate of one step's tool calls (baton.tools.executor.ToolGate)."""
        return WorkflowToolGate(self, workflow_id, tenant_id)


@dataclass(frozen=True)
class WorkflowToolGate:
    """ToolCalls for one workflow, in the shape StepTools takes."""

    calls: ToolCalls
    workflow_id: str
    tenant_id: str

    def check(self) -> None:
        self.calls.check(self.workflow_id, self.tenant_id)

    def running(self) -> contextlib.AbstractContextManager[None]:
        return self.calls.running(self.workflow_id, self.tenant_id)


# -- the listener every service process runs -----------------------------------------------------------


@dataclass(frozen=True)
class Obeyed:
    """What a service's hook did about one command."""

    halted: int = 0
    detail: str = ""


# Called once the command is in the state; returns what the service did. Raising makes the bus re-read the
# command later (the hook runs again, so it must be idempotent): no confirmation is sent before it succeeded.
CommandHook = Callable[[ControlCommand], Awaitable[Obeyed]]


class ControlListener:
    """Keeps a ControlState from the control topic, runs the service's hook, confirms each command."""

    def __init__(
        self,
        events: EventBus,
        state: ControlState,
        *,
        on_command: CommandHook | None = None,
        confirm_backlog_within_s: float = 60.0,
    ) -> None:
        self._events = events
        self.state = state
        self._on_command = on_command
        self._confirm_within_s = confirm_backlog_within_s
        self._backlog: dict[int, int] = {}
        self._read_to: dict[int, int] = {}
        self._caught_up = asyncio.Event()
        self._obeyed: dict[str, Obeyed] = {}  # hooks done whose confirmation is not yet acknowledged
        self._confirmed: OrderedDict[str, None] = OrderedDict()
        self.subscription: Subscription | None = None
        self.confirmed = 0

    async def start(self, *, catch_up_s: float = 30.0) -> None:
        """Subscribe and return once every command already on the topic is applied."""
        await self._events.bus.create_topics([topics.CONTROL, topics.CONTROL_CONFIRMATIONS, topics.DEAD_LETTER])
        self._backlog = {p: end for p, end in (await self._events.bus.end_offsets(topics.CONTROL)).items() if end}
        self._check_caught_up()
        consumer = EventConsumer(self._events, group_id=f"{topics.CONTROL}.{self._events.role}", handler=self._on_event)

        async def handle(record: BusRecord) -> None:
            await consumer(record)
            self._read_to[record.partition] = max(self._read_to.get(record.partition, 0), record.offset + 1)
            self._check_caught_up()

        # By offset, not by key: a scope's HALT and RESUME share a key anyway, and the backlog is tracked by offset.
        self.subscription = await self._events.bus.subscribe(
            [topics.CONTROL], group_id=None, handler=handle, by_key=False
        )
        try:
            await asyncio.wait_for(self._caught_up.wait(), catch_up_s)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(
                f"the control topic {topics.CONTROL} was not read up to its end within {catch_up_s}s; a service "
                "that does not know what is halted must not start: check the bus and start again"
            ) from None

    def _check_caught_up(self) -> None:
        if all(self._read_to.get(p, 0) >= end for p, end in self._backlog.items()):
            self._caught_up.set()

    async def stop(self) -> None:
        if self.subscription is not None:
            await self.subscription.stop()

    async def _on_event(self, event: Event, record: BusRecord) -> None:
        if not isinstance(event, ControlCommand):
            return  # misplaced events were dead-lettered by the consumer already
        event_id = event.envelope.event_id
        if event_id in self._confirmed:
            return
        self.state.apply(event)
        obeyed = self._obeyed.get(event_id)
        if obeyed is None:
            seen_ms = _ms_since(event.envelope.occurred_at)
            started = time.monotonic()
            obeyed = await self._on_command(event) if self._on_command is not None else Obeyed()
            timing = (
                f"read {seen_ms:.0f} ms after it was issued, obeyed in {(time.monotonic() - started) * 1000:.0f} ms"
            )
            obeyed = Obeyed(obeyed.halted, f"{obeyed.detail}; {timing}" if obeyed.detail else timing)
            self._obeyed[event_id] = obeyed
        backlog = record.offset < self._backlog.get(record.partition, 0)
        if not backlog or _ms_since(event.envelope.occurred_at) <= self._confirm_within_s * 1000:
            # A command from before this process started is confirmed only while someone may still be waiting.
            await self._confirm(event, obeyed)
        del self._obeyed[event_id]
        self._confirmed[event_id] = None
        while len(self._confirmed) > self.state.capacity:
            self._confirmed.popitem(last=False)

    async def _confirm(self, command: ControlCommand, obeyed: Obeyed) -> None:
        producer = self._events.producer
        envelope = command.envelope.model_copy(
            update={
                "event_id": stable_event_id("control-confirmed", command.envelope.event_id, producer),
                "causation_id": command.envelope.event_id,
                "producer": producer,
                "occurred_at": datetime.now(UTC),
                "event_type": "",
                "schema_version": 0,
            }
        )
        await self._events.publish(
            topics.CONTROL_CONFIRMATIONS,
            ControlConfirmed(
                envelope=envelope,
                command_event_id=command.envelope.event_id,
                command=command.command,
                scope=command.scope,
                target=command.target,
                role=self._events.role,
                halted=obeyed.halted,
                detail=obeyed.detail,
            ),
        )
        self.confirmed += 1


def after_tool_calls(calls: ToolCalls) -> CommandHook:
    """An agent's hook: confirm only once no tool call in the command's scope is in flight."""

    async def obey(command: ControlCommand) -> Obeyed:
        if command.command is not ControlAction.HALT:
            return Obeyed()
        waited = await calls.drained(command)
        return Obeyed(detail=f"waited for {waited} tool calls in flight" if waited else "")

    return obey


def _ms_since(at: datetime) -> float:
    return (datetime.now(UTC) - at).total_seconds() * 1000


async def listen(
    events: EventBus, state: ControlState | None = None, *, on_command: CommandHook | None = None
) -> ControlListener:
    """Start a service process's control listener (one call; stop it with the service)."""
    listener = ControlListener(events, state or ControlState(), on_command=on_command)
    await listener.start()
    return listener


# -- issuing a command (`baton kill`, `baton resume`) ------------------------------------------------------


@dataclass(frozen=True)
class Confirmation:
    """One process's confirmation as the operator saw it arrive."""

    role: str
    producer: str
    latency_ms: float  # from the command's publish to this confirmation's arrival, as the operator saw it
    confirmed_ms: float  # from the command's creation to the confirmation's, by the two envelopes' clocks
    halted: int
    detail: str
    at: float  # time.time() when it arrived


@dataclass
class IssueReport:
    """A command published and who confirmed it within the timeout."""

    command: ControlCommand
    expected: set[str]
    confirmations: list[Confirmation] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # confirmations that did not prove who sent them

    @property
    def missing(self) -> list[str]:
        """Expected roles no process of which confirmed."""
        return sorted(self.expected - {c.role for c in self.confirmations})

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def halted(self) -> int:
        return sum(c.halted for c in self.confirmations)

    def lines(self) -> list[str]:
        """The report as the CLI prints it."""
        what = f"{self.command.command.value} {self.command.scope.value}"
        if self.command.target is not None:
            what += f" {self.command.target}"
        out = [f"{what} (command {self.command.envelope.event_id}): {len(self.confirmations)} confirmations"]
        for c in sorted(self.confirmations, key=lambda c: c.latency_ms):
            detail = f"; {c.detail}" if c.detail else ""
            out.append(f"  confirmed  {c.role:<28} {c.producer:<48} {c.latency_ms:8.1f} ms  halted {c.halted}{detail}")
        out.extend(f"  REFUSED    {r}" for r in self.refused)
        out.extend(f"  MISSING    {role}: no process confirmed" for role in self.missing)
        return out


async def issue(
    events: EventBus,
    *,
    action: ControlAction,
    scope: ControlScope,
    target: str | None,
    reason: str,
    issued_by: str,
    expected: Collection[str],
    timeout_s: float = 5.0,
    settle_s: float = 0.2,
    on_confirmation: Callable[[Confirmation], None] | None = None,
) -> IssueReport:
    """Publish a command (events must sign as the operator) and collect confirmations until every expected role
    confirmed (then settle_s more, for other replicas) or timeout_s passed."""
    if events.role != identity.OPERATOR:
        raise ValueError(f"control commands are signed by the {identity.OPERATOR} role, not {events.role}")
    event_id = str(uuid.uuid4())
    command = ControlCommand(
        envelope=command_envelope(scope, target, producer=events.producer),
        command=action,
        scope=scope,
        target=target,
        reason=reason,
        issued_by=issued_by,
    )
    report = IssueReport(command=command, expected=set(expected))
    everyone = asyncio.Event()
    started = time.monotonic()
    seen: set[str] = set()

    async def on_record(record: BusRecord) -> None:
        try:
            role = events.authenticate(record)
            event = await events.serde.decode(record.value)
        except (AuthenticationError, DecodeError) as exc:
            log.warning("confirmation %s@%d not counted: %s", record.topic, record.offset, exc)
            return
        if not isinstance(event, ControlConfirmed) or event.command_event_id != event_id:
            return
        problem = misplaced(event, record.topic) or unauthorized(event, record.topic, role)
        if problem is None and event.role != role:
            problem = f"{event.envelope.producer} says it is {event.role} but signed as {role}"
        if problem is not None:
            report.refused.append(problem)
            return
        if event.envelope.event_id in seen:
            return
        seen.add(event.envelope.event_id)
        confirmation = Confirmation(
            role=role,
            producer=event.envelope.producer,
            latency_ms=(time.monotonic() - started) * 1000,
            confirmed_ms=(event.envelope.occurred_at - command.envelope.occurred_at).total_seconds() * 1000,
            halted=event.halted,
            detail=event.detail,
            at=time.time(),
        )
        report.confirmations.append(confirmation)
        if on_confirmation is not None:
            on_confirmation(confirmation)
        if not report.missing:
            everyone.set()

    await events.bus.create_topics([topics.CONTROL, topics.CONTROL_CONFIRMATIONS])
    # Subscribed before the command goes out, from the start of the topic: no confirmation can be missed.
    sub = await events.bus.subscribe([topics.CONTROL_CONFIRMATIONS], group_id=None, handler=on_record)
    try:
        # Made now, so its time is when it is sent (services report how long after it they read it).
        command = command.model_copy(
            update={"envelope": command_envelope(scope, target, producer=events.producer, event_id=event_id)}
        )
        report.command = command
        started = time.monotonic()
        await events.publish(topics.CONTROL, command)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), timeout_s)
            await asyncio.sleep(settle_s)
    finally:
        await sub.stop()
    return report


def latency_by_role(report: IssueReport) -> Mapping[str, float]:
    """The slowest confirmation of each role, in ms."""
    slowest: dict[str, float] = {}
    for c in report.confirmations:
        slowest[c.role] = max(slowest.get(c.role, 0.0), c.latency_ms)
    return slowest
