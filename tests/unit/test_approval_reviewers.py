"""Reviewer identities from reviewers.yaml: only token hashes are kept, and a bad file says what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.approvals.model import Reviewer
from baton.workflows import default_workflow_dir, load_workflows
from services.approvals.reviewers import Reviewers, ReviewersFileError, token_sha256

ALICE = f"""
- name: alice
  token_sha256: {token_sha256("alice-secret")}
  queues: [support-leads]
  roles: [approver]
- name: victor
  token_sha256: {token_sha256("victor-secret")}
  queues: ["*"]
  roles: [viewer]
"""


def _load(tmp_path: Path, text: str) -> Reviewers:
    path = tmp_path / "reviewers.yaml"
    path.write_text(text)
    return Reviewers.load(path)


def test_a_token_authenticates_its_reviewer_and_nothing_else_does(tmp_path: Path) -> None:
    reviewers = _load(tmp_path, ALICE)
    alice = reviewers.authenticate("alice-secret")
    assert alice == Reviewer(name="alice", queues=frozenset({"support-leads"}), roles=frozenset({"approver"}))
    assert alice.approves and alice.sees("support-leads") and not alice.sees("compliance-reviewers")
    victor = reviewers.authenticate("victor-secret")
    assert victor is not None and victor.sees("anything") and not victor.approves
    for wrong in ("", None, "alice-secret ", token_sha256("alice-secret"), "ALICE-SECRET"):
        assert reviewers.authenticate(wrong) is None
    assert reviewers.by_name("alice") == alice
    assert reviewers.by_name("mallory") is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- [", "not valid YAML"),
        ("{}", "expected a non-empty list of reviewers"),
        ("- name: a\n  token: plain\n  queues: [q]\n  roles: [approver]", "unknown keys ['token']"),
        ("- name: a\n  token_sha256: abc\n  queues: [q]\n  roles: [approver]", "must be 64 hex digits"),
        (f"- name: a\n  token_sha256: {'a' * 64}\n  queues: []\n  roles: [approver]", "'queues' must be a non-empty"),
        (f"- name: a\n  token_sha256: {'a' * 64}\n  queues: [q]\n  roles: [admin]", "unknown roles ['admin']"),
        (
            f"- {{name: a, token_sha256: {'a' * 64}, queues: [q], roles: [viewer]}}\n"
            f"- {{name: a, token_sha256: {'b' * 64}, queues: [q], roles: [viewer]}}",
            "reviewer 'a' is listed twice",
        ),
        (
            f"- {{name: a, token_sha256: {'a' * 64}, queues: [q], roles: [viewer]}}\n"
            f"- {{name: b, token_sha256: {'a' * 64}, queues: [q], roles: [viewer]}}",
            "the same token as another reviewer",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_fix(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ReviewersFileError) as refused:
        _load(tmp_path, text)
    assert says in str(refused.value)
    assert str(tmp_path / "reviewers.yaml") in str(refused.value)


def test_a_missing_file_says_where_the_example_is(tmp_path: Path) -> None:
    with pytest.raises(ReviewersFileError, match=r"no such file.*workflows/reviewers\.yaml"):
        Reviewers.load(tmp_path / "absent.yaml")


def test_the_demo_reviewers_cover_the_reference_workflows_queues_and_are_no_workflow() -> None:
    directory = default_workflow_dir()
    reviewers = Reviewers.load(directory / "reviewers.yaml")
    names = {r.name: r for r in reviewers}
    assert {n for n, r in names.items() if r.approves} == {"alice", "bob", "carol"}
    assert [n for n, r in names.items() if not r.approves] == ["victor"]
    queues = {spec.escalation.queue for spec in load_workflows(directory).values()}
    assert queues == {"support-leads", "compliance-reviewers"}
    for queue in queues:
        assert sum(r.approves and r.sees(queue) for r in reviewers) >= 2, queue
    for name in ("alice", "bob", "carol", "victor"):
        assert reviewers.authenticate(f"{name}-demo-token") == names[name]
