"""The supervisor's side of the kill switch: a running workflow halted KILLED once, a new task refused, an agent's
refusal turned into the same outcome."""

from __future__ import annotations

import pytest

from baton.contracts.models import FailureClass
from baton.control import KILLED
from baton.supervisor import Outcome, RequestStep, Supervisor
from tests.unit.test_supervisor import WF, result, sup, task

__all__ = ["sup"]  # the fixture


def test_a_running_workflow_is_halted_killed_once(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    t = sup.kill(WF, "killed by alice: runaway")
    assert t is not None and t.effects == (Outcome("halted", KILLED, "killed by alice: runaway"),)
    assert t.state is not None and t.state.pending_outcome is not None
    sup.commit(t.state)
    assert sup.kill(WF, "again") is None  # decided already: only that outcome is ever sent
    sup.commit(sup.finalize(t.state))
    assert sup.kill(WF, "again") is None and sup.finished[WF][1] == KILLED
    assert sup.handle(result("ticket_lookup"), now=1.0).state is None  # a late result of a killed workflow


def test_a_new_task_in_scope_gets_one_halted_outcome_and_no_step(sup: Supervisor) -> None:
    t = sup.killed(task(), "killed by alice: incident", now=0.0)
    assert t is not None
    assert not any(isinstance(e, RequestStep) for e in t.effects)
    (outcome,) = t.effects
    assert isinstance(outcome, Outcome) and (outcome.kind, outcome.reason_code) == ("halted", KILLED)
    assert "task rejected" in outcome.reason and outcome.failure_class is None


def test_an_event_of_a_held_workflow_in_scope_halts_it(sup: Supervisor) -> None:
    sup.handle(task(), now=0.0)
    t = sup.killed(result("ticket_lookup"), "killed", now=1.0)
    assert t is not None and isinstance(t.effects[0], Outcome) and t.effects[0].reason_code == KILLED


@pytest.mark.parametrize("code", [KILLED, f"TOOL_{KILLED}"])
def test_an_agent_that_saw_the_kill_first_ends_the_workflow_the_same_way(sup: Supervisor, code: str) -> None:
    sup.handle(task(), now=0.0)
    t = sup.handle(result("ticket_lookup", ok=False, code=code, cls=FailureClass.SYSTEMIC), now=1.0)
    assert isinstance(t.effects[0], Outcome) and (t.effects[0].kind, t.effects[0].reason_code) == ("halted", KILLED)
