"""`baton kill` / `baton resume` refuse what they cannot do, with the fix (the run itself: tests/e2e)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from baton.cli import app


@pytest.mark.parametrize("verb", ["kill", "resume"])
@pytest.mark.parametrize("scopes", [[], ["--workflow", "wf-1", "--all"], ["--tenant", "t", "--workflow", "w"]])
def test_exactly_one_scope(verb: str, scopes: list[str]) -> None:
    result = CliRunner().invoke(app, [verb, *scopes], env={"BATON_BUS": "kafka"})
    assert result.exit_code == 2
    assert "exactly one of --workflow ID, --tenant ID or --all" in result.output


def test_the_embedded_bus_reaches_no_service() -> None:
    result = CliRunner().invoke(app, ["kill", "--all"], env={"BATON_BUS": "embedded"})
    assert result.exit_code == 2
    assert "set BATON_BUS=kafka" in result.output
