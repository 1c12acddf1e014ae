"""The kill switch where a tool runs: refused before anything is recorded, and a call in flight holds the
confirmation until it returns."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from baton.contracts.models import ControlAction, ControlCommand, ControlScope
from baton.control import KILLED, ControlState, ToolCalls, command_envelope
from baton.ledger import Ledger
from baton.tools import ToolError
from tests.unit.test_tool_executor import BALANCE, PAY, Payments, _step

KILL_ALL = ControlCommand(
    envelope=command_envelope(ControlScope.ALL, None, producer="op"),
    command=ControlAction.HALT,
    scope=ControlScope.ALL,
    reason="incident",
    issued_by="alice",
)


async def test_a_killed_step_runs_no_tool_and_records_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    payments = Payments()
    state = ControlState()
    calls = ToolCalls(state)
    step = dataclasses.replace(await _step(payments, ledger), gate=calls.gate("wf-1", "acme"))
    await step.run(BALANCE, {"invoice_id": "inv-1"}, 0)  # runs while nothing is halted
    state.apply(KILL_ALL)
    with pytest.raises(ToolError) as refused:
        await step.run(PAY, {"invoice_id": "inv-1", "amount": 5.0}, 0)
    assert refused.value.code == KILLED
    assert payments.paid == []
    assert ledger.recorded_call(step.key("pay", 0)) is None  # no intent written: nothing to reconcile later
    await step.registry.close()
    ledger.close()


async def test_the_kill_waits_for_a_call_already_running(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    payments = Payments()
    state = ControlState()
    calls = ToolCalls(state)
    step = dataclasses.replace(await _step(payments, ledger), gate=calls.gate("wf-1", "acme"))
    payments.hang = True
    running = asyncio.create_task(step.run(BALANCE, {"invoice_id": "inv-1"}, 0))
    await asyncio.sleep(0.02)
    state.apply(KILL_ALL)
    assert calls.in_flight(KILL_ALL) == 1
    # The call times out (its declared 0.2 s); only then may the agent confirm.
    assert await asyncio.wait_for(calls.drained(KILL_ALL), 2) == 1
    with pytest.raises(ToolError):
        await running
    await step.registry.close()
    ledger.close()
