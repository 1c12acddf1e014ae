"""`baton local` replaces only the audit and ledger it made itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.workflows import default_workflow_dir, load_workflows
from baton_demo.local import LOCAL_MARKER, LocalStateError, _prepare


@pytest.fixture(autouse=True)
def _keep_the_workflow_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """_prepare points BATON_WORKFLOW_DIR at the run's directory; the other tests need it back."""
    monkeypatch.setenv("BATON_WORKFLOW_DIR", str(default_workflow_dir()))
    load_workflows.cache_clear()


def test_a_state_directory_with_an_audit_baton_local_did_not_make_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "audit.db").write_text("a real auditor's store")
    with pytest.raises(LocalStateError, match="pass --state with a directory of its own"):
        _prepare(tmp_path, tmp_path)
    assert (tmp_path / "audit.db").read_text() == "a real auditor's store"


def test_its_own_earlier_run_is_replaced(tmp_path: Path) -> None:
    _prepare(tmp_path, tmp_path)
    assert (tmp_path / LOCAL_MARKER).exists()
    (tmp_path / "audit.db").write_text("the last local run")
    _prepare(tmp_path, tmp_path)
    assert not (tmp_path / "audit.db").exists()
