"""The memory soak's drivers, small: every workflow finishes and only tombstones or nothing stay held."""

from __future__ import annotations

import pytest

from baton_demo.soak import soak


@pytest.mark.parametrize(("service", "held"), [("supervisor", 50), ("handoff-validator", 0)])
async def test_a_service_holds_nothing_of_finished_workflows_but_bounded_tombstones(service: str, held: int) -> None:
    [sample] = await soak(service, workflows=200, report_at=[200], finished_capacity=50)
    assert sample.workflows == 200 and sample.held == held
