"""The agents' step ledger: a step runs once at a time, and a finished step's events are replayed."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton import ledger
from baton.tools import ToolError
from baton_demo.store import WorldStore
from baton_demo.world import StepBusyError, World


def test_a_second_replica_cannot_start_a_step_another_one_is_running(tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")
    assert world.step_started("wf:a:1:1", workflow_id="wf", agent="a", owner="agent@host/1") is None
    with pytest.raises(StepBusyError, match="running at agent@host/1"):
        world.step_started("wf:a:1:1", workflow_id="wf", agent="a", owner="agent@host/2")
    world.step_completed("wf:a:1:1", '[["t", "AAAA"]]')
    # Once finished, the other replica gets the stored events instead of running it again.
    assert world.step_started("wf:a:1:1", workflow_id="wf", agent="a", owner="agent@host/2") == '[["t", "AAAA"]]'
    assert world.verify().counts["steps_started_twice"] == 0
    world.close()


def test_a_claim_whose_owner_gave_up_or_died_can_be_taken_over(tmp_path: Path) -> None:
    world = World(tmp_path / "world.db")
    world.step_started("wf:a:1:1", workflow_id="wf", agent="a", owner="agent@host/1")
    world.step_abandoned("wf:a:1:1", owner="agent@host/1")  # its publish failed: released at once
    assert world.step_started("wf:a:1:1", workflow_id="wf", agent="a", owner="agent@host/2") is None
    world.step_started("wf:b:1:1", workflow_id="wf", agent="b", owner="agent@host/1", lease_s=-1)  # lease ran out
    assert world.step_started("wf:b:1:1", workflow_id="wf", agent="b", owner="agent@host/2") is None
    world.close()


def test_begin_step_claims_the_step_and_pins_the_workflows_tenant_in_one_transaction(tmp_path: Path) -> None:
    world = World(tmp_path / "w.db")
    assert world.begin_step("wf:a:1:1", workflow_id="wf", agent="a", tenant_id="t-1", owner="o1") == (None, "t-1")
    # A later step of the workflow, arriving for another tenant, learns the tenant the first step pinned.
    assert world.begin_step("wf:b:2:1", workflow_id="wf", agent="b", tenant_id="t-2", owner="o1") == (None, "t-1")
    with pytest.raises(StepBusyError):
        world.begin_step("wf:a:1:1", workflow_id="wf", agent="a", tenant_id="t-1", owner="o2")
    world.step_completed("wf:a:1:1", "[]")
    assert world.begin_step("wf:a:1:1", workflow_id="wf", agent="a", tenant_id="t-1", owner="o2") == ("[]", "t-1")
    assert world.workflow_tenant("wf", "t-3") == "t-1"
    assert world.verify().counts["steps_started_twice"] == 0


def test_the_world_as_an_agents_store_raises_the_librarys_errors(tmp_path: Path) -> None:
    store = WorldStore(tmp_path / "w.db")
    store.begin_step("wf:a:1:1", workflow_id="wf", agent="a", tenant_id="t-1", owner="o1")
    with pytest.raises(ledger.StepBusyError, match="running at o1"):
        store.begin_step("wf:a:1:1", workflow_id="wf", agent="a", tenant_id="t-1", owner="o2")
    with pytest.raises(ToolError, match="no tool 'drop_tables'") as refused:
        store.call("drop_tables", {}, idempotency_key="k", tenant_id="t-1")
    assert refused.value.code == "UNKNOWN_TOOL"
    store.close()
