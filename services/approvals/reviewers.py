"""Who may review: reviewer identities from reviewers.yaml, authenticated by a bearer token.

Tokens are never stored, only their sha256 (hex); a presented token is hashed and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from baton.approvals.model import Reviewer

ROLES = frozenset({"approver", "viewer"})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ReviewersFileError(ValueError):
    """reviewers.yaml cannot be used: the message names the file, the entry and the fix."""


def token_sha256(token: str) -> str:
    """The sha256 (hex) of a token, as reviewers.yaml stores it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Reviewers:
    """The configured reviewers; `authenticate` maps a bearer token to one of them."""

    def __init__(self, entries: Iterable[tuple[Reviewer, str]]) -> None:
        self._entries: list[tuple[Reviewer, bytes]] = []
        names: set[str] = set()
        digests: set[str] = set()
        for reviewer, digest in entries:
            if reviewer.name in names:
                raise ReviewersFileError(f"reviewer {reviewer.name!r} is listed twice; keep one entry per reviewer")
            if digest in digests:
                raise ReviewersFileError(
                    f"reviewer {reviewer.name!r} has the same token as another reviewer; give each their own token"
                )
            names.add(reviewer.name)
            digests.add(digest)
            self._entries.append((reviewer, bytes.fromhex(digest)))

    @classmethod
    def load(cls, path: Path) -> Reviewers:
        """Read reviewers.yaml: a list of {name, token_sha256, queues, roles}."""
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ReviewersFileError(
                f"{path}: no such file; point the approval service at a reviewers.yaml "
                "(see workflows/reviewers.yaml for the format)"
            ) from exc
        except yaml.YAMLError as exc:
            raise ReviewersFileError(f"{path}: not valid YAML: {exc}") from exc
        if isinstance(raw, dict) and "reviewers" in raw:
            raw = raw["reviewers"]
        if not isinstance(raw, list) or not raw:
            raise ReviewersFileError(
                f"{path}: expected a non-empty list of reviewers, each {{name, token_sha256, queues, roles}}"
            )
        entries = [_parse(path, i, entry) for i, entry in enumerate(raw)]
        try:
            return cls(entries)
        except ReviewersFileError as exc:
            raise ReviewersFileError(f"{path}: {exc}") from None

    def authenticate(self, bearer_token: str | None) -> Reviewer | None:
        """The reviewer holding this token, or None (every entry is compared, in constant time)."""
        if not bearer_token:
            return None
        presented = hashlib.sha256(bearer_token.encode("utf-8")).digest()
        found: Reviewer | None = None
        for reviewer, digest in self._entries:
            if hmac.compare_digest(presented, digest):
                found = reviewer
        return found

    def by_name(self, name: str) -> Reviewer | None:
        """The reviewer with this name (a signed session names its reviewer), or None."""
        for reviewer, _ in self._entries:
            if reviewer.name == name:
                return reviewer
        return None

    def __iter__(self) -> Iterator[Reviewer]:
        return (reviewer for reviewer, _ in self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _parse(path: Path, index: int, entry: Any) -> tuple[Reviewer, str]:
    where = f"{path}: reviewer #{index + 1}"
    if not isinstance(entry, dict):
        raise ReviewersFileError(f"{where}: expected a mapping {{name, token_sha256, queues, roles}}, got {entry!r}")
    unknown = set(entry) - {"name", "token_sha256", "queues", "roles"}
    if unknown:
        raise ReviewersFileError(f"{where}: unknown keys {sorted(unknown)}; allowed: name, token_sha256, queues, roles")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ReviewersFileError(f"{where}: 'name' must be a non-empty string")
    where = f"{path}: reviewer {name!r}"
    if "token" in entry:
        raise ReviewersFileError(f"{where}: store the token's sha256 as 'token_sha256', never the token itself")
    digest = entry.get("token_sha256")
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest.strip().lower()):
        raise ReviewersFileError(
            f"{where}: 'token_sha256' must be 64 hex digits, the sha256 of the token "
            '(e.g. printf %s "$TOKEN" | sha256sum)'
        )
    queues = entry.get("queues")
    if not isinstance(queues, list) or not queues or not all(isinstance(q, str) and q for q in queues):
        raise ReviewersFileError(f"{where}: 'queues' must be a non-empty list of queue names, or [\"*\"] for all")
    roles = entry.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise ReviewersFileError(f"{where}: 'roles' must be a non-empty list of {sorted(ROLES)}")
    bad = set(roles) - ROLES
    if bad:
        raise ReviewersFileError(f"{where}: unknown roles {sorted(bad)}; a reviewer is an approver or a viewer")
    reviewer = Reviewer(name=name.strip(), queues=frozenset(queues), roles=frozenset(roles))
    return reviewer, digest.strip().lower()
