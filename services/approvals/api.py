"""The reviewers' HTTP API and page: list, read and decide pending approvals, live through Server-Sent Events.

Every /api route needs a reviewer: `Authorization: Bearer <token>` (the CLI, a Slack bot, a ticketing
integration) or the signed session cookie `POST /api/session` sets (the page: a browser's EventSource cannot send
headers). Errors are JSON `{code, message}` with the status of the desk's `ApprovalError`.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations at runtime, and the
# closures' (`Signed`) are not module globals it could resolve from strings.
import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from importlib import resources
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from baton.approvals.model import Approval, ApprovalError, Reviewer, VoteKind
from services.approvals.reviewers import Reviewers

SESSION_COOKIE = "baton_approvals_session"
STATS_WINDOW_S = 90 * 86_400
HEARTBEAT_S = 15.0
# A reviewer's reason is recorded, published and audited: a paragraph, not a document.
MAX_REASON_CHARS = 2000
HOW_TO_AUTHENTICATE = (
    "send your reviewer token as 'Authorization: Bearer <token>', or sign in on the reviewer page "
    '(POST /api/session with {"token": ...}); tokens are issued in reviewers.yaml'
)


class Desk(Protocol):
    """What the API needs of `baton.approvals.desk.ApprovalDesk`."""

    async def get(self, approval_id: str, /) -> Approval: ...

    async def pending(self, queue: str | None = None) -> list[Approval]: ...

    async def decide(
        self, approval_id: str, /, *, reviewer: Reviewer, kind: VoteKind, reason: str, digest: str | None = None
    ) -> Approval: ...

    def summary(self, approval: Approval, /) -> dict[str, Any]: ...

    async def stats(self, *, since: float, reviewer: Reviewer | None = None) -> dict[str, Any]: ...


class ChangeSignal:
    """Wakes every open stream at once: the service calls `changed()` after `desk.receive` (or any change it
    makes); decisions taken through this API call it themselves. Other replicas' changes are found by polling."""

    def __init__(self) -> None:
        self._streams: set[asyncio.Event] = set()
        self.generation = 0  # counts changed() calls: a cached read older than the last one is stale

    def changed(self) -> None:
        """Something this process knows of changed: every stream re-checks now (call it on the event loop)."""
        self.generation += 1
        for event in self._streams:
            event.set()

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._streams.add(event)
        try:
            yield event
        finally:
            self._streams.discard(event)


class _PendingWatch:
    """The pending approvals every open stream compares, read from the desk at most once per poll interval (or
    again after a change signal), however many reviewers are watching."""

    def __init__(self, desk: Desk, signal: ChangeSignal, interval_s: float) -> None:
        self._desk = desk
        self._signal = signal
        self._interval_s = interval_s
        self._lock = asyncio.Lock()
        self._read: tuple[float, int, list[Approval]] | None = None  # (monotonic time, generation, approvals)

    async def pending(self) -> list[Approval]:
        async with self._lock:
            read = self._read
            fresh = read is not None and read[1] == self._signal.generation
            if read is None or not fresh or time.monotonic() - read[0] >= self._interval_s * 0.5:
                generation = self._signal.generation
                read = (time.monotonic(), generation, await self._desk.pending())
                self._read = read
            return read[2]


# --- documented shapes -------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable, e.g. ACTION_CHANGED, WRONG_QUEUE, UNAUTHENTICATED")
    message: str = Field(description="what was wrong and what to do")


class DiffRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    field: str
    before: Any = None
    after: Any = None


class PlanRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    argument: str
    value: Any = None
    bound_from: str | None = None


class WhatChanges(BaseModel):
    model_config = ConfigDict(extra="allow")
    diff: list[DiffRow] = Field(default_factory=list, description="the tool's dry run: field, before, after")
    plan: list[PlanRow] = Field(default_factory=list, description="the call's arguments and the context they came from")


class ApprovalSummary(BaseModel):
    """What a reviewer needs to decide one approval (the desk's summary)."""

    model_config = ConfigDict(extra="allow")
    id: str
    state: str = Field(description="PENDING, APPROVED, REJECTED or EXPIRED")
    queue: str
    deadline: Any = Field(None, description="when it expires (the SLA)")
    title: str = ""
    what_changes: WhatChanges = Field(default_factory=WhatChanges)
    why: str | None = Field(None, description="why the agent wants it")
    policy_reason: str | None = Field(None, description="why the policy asks a human")
    confidence: float | None = None
    decision_type: str | None = None
    decision_point: Any = None
    lineage: list[str] = Field(default_factory=list, description="agents that ran before, in order")
    digest: str = Field(description="the exact action's digest: send it back to approve this action and no other")
    tier: str | None = None
    tenant: str | None = None


class ApproveBody(BaseModel):
    digest: str = Field(description="the digest of the summary you reviewed; 409 ACTION_CHANGED if it moved on")
    reason: str = Field("", max_length=MAX_REASON_CHARS, description="optional comment")


class RejectBody(BaseModel):
    reason: str = Field(
        max_length=MAX_REASON_CHARS, description="required: why it is rejected (the agent's side sees it)"
    )
    digest: str | None = Field(None, description="the digest of the summary you reviewed, if you have it")


class SessionBody(BaseModel):
    token: str = Field(description="your reviewer token")


class Me(BaseModel):
    name: str
    queues: list[str] = Field(description='the queues you see ("*": every queue)')
    roles: list[str]
    approves: bool = Field(description="whether you may decide (an approver), or only read (a viewer)")


# --- sessions ----------------------------------------------------------------------------------------------------


class _Sessions:
    """Signed session cookies: name.expiry.hmac-sha256(name.expiry); the secret is shared by replicas."""

    def __init__(self, secret: bytes, lifetime_s: float) -> None:
        self._secret = secret
        self._lifetime_s = lifetime_s

    def issue(self, name: str, now: float) -> str:
        payload = f"{name}.{int(now + self._lifetime_s)}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, cookie: str, now: float) -> str | None:
        payload, _, signature = cookie.rpartition(".")
        name, _, expires = payload.rpartition(".")
        if not name or not expires.isdigit() or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        return name if int(expires) > now else None

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode("utf-8"), hashlib.sha256).hexdigest()


def _unauthenticated(what: str) -> ApprovalError:
    return ApprovalError("UNAUTHENTICATED", f"{what}: {HOW_TO_AUTHENTICATE}", 401)


def _error_response(exc: ApprovalError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="baton-approvals"'} if exc.status == 401 else None
    return JSONResponse({"code": exc.code, "message": str(exc)}, status_code=exc.status, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no token, or an unknown one"},
    403: {"model": ErrorBody, "description": "not your queue (WRONG_QUEUE), or you only view (NOT_APPROVER)"},
}


def create_app(
    desk: Desk,
    reviewers: Reviewers,
    *,
    title: str = "Baton approvals",
    changes: ChangeSignal | None = None,
    session_secret: bytes | None = None,
    session_lifetime_s: float = 8 * 3600,
    poll_interval_s: float = 1.0,
    stream_lifetime_s: float = 300.0,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The API and the reviewer page over one desk. `changes` (also `app.state.changes`) wakes the streams;
    replicas behind one load balancer need the same `session_secret` (a random one otherwise)."""
    signal = changes or ChangeSignal()
    sessions = _Sessions(session_secret or secrets.token_bytes(32), session_lifetime_s)
    page = resources.files("services.approvals").joinpath("page.html").read_text(encoding="utf-8")
    page = page.replace("{{TITLE}}", _html_escape(title))

    app = FastAPI(
        title=title,
        summary="Humans decide the exact tool calls Baton's policy guard holds for approval.",
        description=(
            "Authenticate with `Authorization: Bearer <token>` (reviewers.yaml). List what waits for you, read a "
            "summary (what will change, why, the policy's reason), then approve it by sending back its `digest`: "
            "an approval permits that exact action and nothing else. Errors are `{code, message}`."
        ),
        version="1",
    )
    app.state.changes = signal
    watch = _PendingWatch(desk, signal, poll_interval_s)

    @app.exception_handler(ApprovalError)
    async def approval_error(_: Request, exc: ApprovalError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return JSONResponse({"code": "INVALID_REQUEST", "message": problems}, status_code=422)

    # Declared so /openapi.json and /docs show both ways in (and /docs can "Authorize"); checked below by hand, so
    # that every refusal is the same {code, message} with WWW-Authenticate.
    bearer = HTTPBearer(auto_error=False, description="your reviewer token (reviewers.yaml)")
    session = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="set by POST /api/session (the page)")

    async def reviewer(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        _session: Annotated[str | None, Depends(session)],
    ) -> Reviewer:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthenticated("the Authorization header is not 'Bearer <token>'")
            found = reviewers.authenticate(token.strip())
            if found is None:
                raise _unauthenticated("unknown token")
            return found
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None:
            name = sessions.verify(cookie, clock())
            found = reviewers.by_name(name) if name is not None else None
            if found is None:
                raise _unauthenticated("your session expired or is not valid; sign in again")
            return found
        raise _unauthenticated("not signed in")

    Signed = Annotated[Reviewer, Depends(reviewer)]

    async def visible(approval_id: str, who: Reviewer) -> Approval:
        approval = await desk.get(approval_id)
        if not who.sees(approval.queue):
            raise ApprovalError(
                "WRONG_QUEUE",
                f"approval {approval_id} is on queue {approval.queue!r}, which {who.name} does not see",
                403,
            )
        return approval

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def reviewer_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.post(
        "/api/session",
        status_code=204,
        summary="Sign in: exchange a token for a session cookie",
        description="Sets a signed, HttpOnly, SameSite=Strict cookie the page and its event stream use.",
        responses={401: ERRORS[401]},
    )
    async def sign_in(body: SessionBody, request: Request) -> Response:
        found = reviewers.authenticate(body.token.strip())
        if found is None:
            raise _unauthenticated("unknown token")
        response = Response(status_code=204)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.issue(found.name, clock()),
            max_age=int(session_lifetime_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.delete("/api/session", status_code=204, summary="Sign out: forget the session cookie")
    async def sign_out() -> Response:
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/api/me", summary="Who you are signed in as", response_model=Me, responses={401: ERRORS[401]})
    async def me(who: Signed) -> Me:
        return Me(name=who.name, queues=sorted(who.queues), roles=sorted(who.roles), approves=who.approves)

    @app.get(
        "/api/approvals",
        summary="Pending approvals you may see, oldest first",
        response_model=list[ApprovalSummary],
        responses=ERRORS,
    )
    async def list_pending(
        who: Signed, queue: Annotated[str | None, Query(description="only this queue")] = None
    ) -> list[dict[str, Any]]:
        if queue is not None and not who.sees(queue):
            raise ApprovalError("WRONG_QUEUE", f"{who.name} does not see queue {queue!r}", 403)
        return [desk.summary(a) for a in await pending_for(who, queue)]

    @app.get(
        "/api/approvals/{approval_id}",
        summary="One approval's summary: what will change, why, and the digest to approve it by",
        response_model=ApprovalSummary,
        responses={**ERRORS, 404: {"model": ErrorBody, "description": "no such approval"}},
    )
    async def show(approval_id: str, who: Signed) -> dict[str, Any]:
        return desk.summary(await visible(approval_id, who))

    decide_errors: dict[int | str, dict[str, Any]] = {
        **ERRORS,
        403: {"model": ErrorBody, "description": "WRONG_QUEUE, NOT_APPROVER or SELF_APPROVAL"},
        404: {"model": ErrorBody, "description": "no such approval"},
        409: {"model": ErrorBody, "description": "ACTION_CHANGED, ALREADY_DECIDED, ALREADY_VOTED or EXPIRED"},
        422: {"model": ErrorBody, "description": "REASON_REQUIRED or INVALID_REQUEST"},
    }

    async def pending_for(who: Reviewer, queue: str | None) -> list[Approval]:
        """What waits in the queues a reviewer sees, each queue read on its own: a busy queue elsewhere never
        crowds theirs out of a page of results."""
        if queue is not None or "*" in who.queues:
            return [a for a in await desk.pending(queue) if who.sees(a.queue)]
        found = [a for q in sorted(who.queues) for a in await desk.pending(q)]
        return sorted(found, key=lambda a: (a.request.requested_at, a.approval_id))

    async def decide(approval_id: str, who: Signed, kind: VoteKind, reason: str, digest: str | None) -> dict[str, Any]:
        await visible(approval_id, who)
        try:
            decided = await desk.decide(approval_id, reviewer=who, kind=kind, reason=reason, digest=digest)
        finally:
            signal.changed()
        return desk.summary(decided)

    @app.post(
        "/api/approvals/{approval_id}/approve",
        summary="Approve the exact action of this digest (one vote of the M required)",
        response_model=ApprovalSummary,
        responses=decide_errors,
    )
    async def approve(approval_id: str, body: ApproveBody, who: Signed) -> dict[str, Any]:
        return await decide(approval_id, who, "approve", body.reason, body.digest)

    @app.post(
        "/api/approvals/{approval_id}/reject",
        summary="Reject this approval, saying why (one reviewer's rejection decides it)",
        response_model=ApprovalSummary,
        responses=decide_errors,
    )
    async def reject(approval_id: str, body: RejectBody, who: Signed) -> dict[str, Any]:
        if not body.reason.strip():
            raise ApprovalError("REASON_REQUIRED", "a rejection needs a reason: say why, the requester sees it", 422)
        return await decide(approval_id, who, "reject", body.reason, body.digest)

    @app.get("/api/stats", summary="Decisions of the last 90 days, in the queues you see", responses={401: ERRORS[401]})
    async def stats(who: Signed) -> dict[str, Any]:
        return await desk.stats(since=clock() - STATS_WINDOW_S, reviewer=who)

    @app.get(
        "/api/stream",
        summary="Server-Sent Events: a `changed` event whenever the approvals you see change",
        description="Sent once on connecting, then on every change (checked every second, and at once when this "
        "replica receives or decides one). Re-read GET /api/approvals on each event.",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 401: ERRORS[401]},
    )
    async def stream(request: Request, who: Signed) -> StreamingResponse:
        async def fingerprint() -> tuple[tuple[str, str, int, str], ...]:
            seen = [a for a in await watch.pending() if who.sees(a.queue)]
            return tuple(sorted((a.approval_id, a.state.value, a.version, a.queue) for a in seen))

        async def events() -> AsyncIterator[str]:
            with signal.subscribe() as woken:
                last = await fingerprint()
                yield "retry: 2000\nevent: changed\ndata: {}\n\n"
                # Every stream ends after stream_lifetime_s and the browser reconnects: the reviewer is
                # authenticated again, and a server shutting down waits for no stream longer than that.
                now = time.monotonic()
                end, beat = now + stream_lifetime_s, now + HEARTBEAT_S
                while now < end and not await request.is_disconnected():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), min(poll_interval_s, beat - now, end - now))
                    woken.clear()
                    seen = await fingerprint()
                    now = time.monotonic()
                    if seen != last:
                        last, beat = seen, now + HEARTBEAT_S
                        yield "event: changed\ndata: {}\n\n"
                    elif now >= beat:
                        beat = now + HEARTBEAT_S
                        yield ": keep-alive\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    return app


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
