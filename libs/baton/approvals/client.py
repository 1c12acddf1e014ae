"""A client of the approval service's HTTP API (what `baton approvals` and integrations call)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8480"


class ApprovalsApiError(Exception):
    """The API refused (its `code` and message), or could not be reached (code UNREACHABLE)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ApprovalsClient:
    """Reads and decides approvals as the reviewer whose bearer token it holds."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str = "",
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self._url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> ApprovalsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def me(self) -> dict[str, Any]:
        """Who the token signs in as."""
        found: dict[str, Any] = self._call("GET", "/api/me")
        return found

    def pending(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Summaries of the pending approvals this reviewer sees (of one queue)."""
        found: list[dict[str, Any]] = self._call("GET", "/api/approvals", params={"queue": queue} if queue else None)
        return found

    def get(self, approval_id: str) -> dict[str, Any]:
        """One approval's summary."""
        found: dict[str, Any] = self._call("GET", f"/api/approvals/{quote(approval_id, safe='')}")
        return found

    def approve(self, approval_id: str, *, reason: str = "", digest: str | None = None) -> dict[str, Any]:
        """Approve the action as the summary shows it now (its digest fetched first unless given)."""
        digest = digest or self.get(approval_id)["digest"]
        found: dict[str, Any] = self._call(
            "POST", f"/api/approvals/{quote(approval_id, safe='')}/approve", json={"digest": digest, "reason": reason}
        )
        return found

    def reject(self, approval_id: str, *, reason: str, digest: str | None = None) -> dict[str, Any]:
        """Reject it, saying why (the digest of the summary read first, unless given)."""
        digest = digest or self.get(approval_id)["digest"]
        found: dict[str, Any] = self._call(
            "POST", f"/api/approvals/{quote(approval_id, safe='')}/reject", json={"digest": digest, "reason": reason}
        )
        return found

    def stats(self) -> dict[str, Any]:
        """The last 90 days' figures, in total and per workflow and decision type."""
        found: dict[str, Any] = self._call("GET", "/api/stats")
        return found

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApprovalsApiError(
                "UNREACHABLE",
                f"cannot reach the approval service at {self._url} ({exc}); is it running? "
                "Point --url or BATON_APPROVALS_URL at it",
            ) from exc
        if response.is_success:
            return response.json() if response.content else None
        try:
            body = response.json()
            code, message = str(body["code"]), str(body["message"])
        except (ValueError, KeyError, TypeError):
            code, message = f"HTTP_{response.status_code}", response.text[:300] or response.reason_phrase
        raise ApprovalsApiError(code, message, response.status_code)
