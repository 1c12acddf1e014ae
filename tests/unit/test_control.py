"""The kill switch's state: scopes, RESUME of exactly one scope, redeliveries, the memory bound, and the tool gate."""

from __future__ import annotations

import asyncio

import pytest

from baton.contracts.models import ControlAction, ControlCommand, ControlScope, FailureClass
from baton.control import KILLED, ControlState, ToolCalls, command_envelope, in_scope
from baton.tools.base import ToolError

HALT, RESUME = ControlAction.HALT, ControlAction.RESUME


def command(action: ControlAction, scope: ControlScope, target: str | None = None, reason: str = "r") -> ControlCommand:
    return ControlCommand(
        envelope=command_envelope(scope, target, producer="op"),
        command=action,
        scope=scope,
        target=target,
        reason=reason,
        issued_by="alice",
    )


def test_each_scope_blocks_what_it_names_and_nothing_else() -> None:
    state = ControlState()
    assert state.quiet and state.blocked("wf-1", "t-1") is None
    state.apply(command(HALT, ControlScope.WORKFLOW, "wf-1", reason="runaway"))
    assert state.blocked("wf-1", "t-1") == "killed by alice: runaway"
    assert state.blocked("wf-2", "t-1") is None
    state.apply(command(HALT, ControlScope.TENANT, "t-2"))
    assert state.blocked("wf-9", "t-2") is not None and state.blocked("wf-9", "t-3") is None
    state.apply(command(HALT, ControlScope.ALL))
    assert state.blocked("anything", "anyone") is not None and not state.quiet


def test_resume_lifts_exactly_the_scope_it_names() -> None:
    state = ControlState()
    for c in (
        command(HALT, ControlScope.WORKFLOW, "wf-1"),
        command(HALT, ControlScope.TENANT, "t-1"),
        command(HALT, ControlScope.ALL),
    ):
        state.apply(c)
    state.apply(command(RESUME, ControlScope.ALL))
    assert state.blocked("wf-2", "t-2") is None
    assert state.blocked("wf-2", "t-1") is not None  # the tenant's own halt stands
    assert state.blocked("wf-1", "t-2") is not None  # and so does the workflow's
    state.apply(command(RESUME, ControlScope.TENANT, "t-1"))
    state.apply(command(RESUME, ControlScope.WORKFLOW, "wf-1"))
    assert state.quiet
    state.apply(command(RESUME, ControlScope.TENANT, "never-halted"))  # harmless
    assert state.quiet


def test_a_redelivered_command_is_applied_once() -> None:
    state = ControlState()
    halt = command(HALT, ControlScope.ALL)
    assert state.apply(halt)
    state.apply(command(RESUME, ControlScope.ALL))
    assert not state.apply(halt)  # the same event again: it does not halt everything a second time
    assert state.quiet


def test_memory_is_bounded_and_the_oldest_workflow_halt_is_forgotten_first() -> None:
    state = ControlState(capacity=3)
    for i in range(5):
        state.apply(command(HALT, ControlScope.WORKFLOW, f"wf-{i}"))
    assert list(state.workflows) == ["wf-2", "wf-3", "wf-4"] and state.forgotten == 2
    assert state.blocked("wf-0", "t") is None and state.blocked("wf-4", "t") is not None
    # Halting one again makes it the newest.
    state.apply(command(HALT, ControlScope.WORKFLOW, "wf-2"))
    state.apply(command(HALT, ControlScope.WORKFLOW, "wf-5"))
    assert list(state.workflows) == ["wf-4", "wf-2", "wf-5"]
    # Everything is one flag: never forgotten, whatever the bound.
    state.apply(command(HALT, ControlScope.ALL))
    for i in range(10):
        state.apply(command(HALT, ControlScope.TENANT, f"t-{i}"))
    assert len(state.tenants) == 3 and state.blocked("wf-0", "t-0") is not None


def test_in_scope() -> None:
    assert in_scope(command(HALT, ControlScope.ALL), "wf", "t")
    assert in_scope(command(HALT, ControlScope.TENANT, "t"), "wf", "t")
    assert not in_scope(command(HALT, ControlScope.TENANT, "t"), "wf", "u")
    assert in_scope(command(HALT, ControlScope.WORKFLOW, "wf"), "wf", "u")
    assert not in_scope(command(HALT, ControlScope.WORKFLOW, "wf"), "wf2", "t")


def test_all_takes_no_target() -> None:
    with pytest.raises(ValueError, match="takes no target"):
        command_envelope(ControlScope.ALL, "x", producer="p")


async def test_tool_calls_are_refused_once_killed_and_the_kill_waits_for_those_in_flight() -> None:
    state = ControlState()
    calls = ToolCalls(state)
    kill = command(HALT, ControlScope.TENANT, "t-1")
    release = asyncio.Event()

    async def a_call(wf: str, tenant: str) -> None:
        with calls.running(wf, tenant):
            await release.wait()

    in_flight = [asyncio.create_task(a_call("wf-1", "t-1")), asyncio.create_task(a_call("wf-2", "t-2"))]
    await asyncio.sleep(0)
    state.apply(kill)
    with pytest.raises(ToolError) as refused:
        calls.check("wf-3", "t-1")
    assert refused.value.code == KILLED and refused.value.failure_class is FailureClass.SYSTEMIC
    with pytest.raises(ToolError), calls.running("wf-1", "t-1"):
        pytest.fail("a call in a killed scope ran")
    calls.check("wf-4", "t-2")  # another tenant's calls still run
    assert calls.in_flight(kill) == 1
    drained = asyncio.create_task(calls.drained(kill))
    await asyncio.sleep(0.01)
    assert not drained.done()  # the call in flight in scope is still running
    release.set()
    assert await asyncio.wait_for(drained, 1) == 1
    await asyncio.gather(*in_flight)
    assert await calls.drained(kill) == 0
