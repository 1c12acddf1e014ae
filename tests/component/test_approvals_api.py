"""The approval service's HTTP API over the real desk and SQLite store: who may see and decide what, and how."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from baton.approvals.desk import ApprovalDesk
from baton.approvals.model import ApprovalState
from baton.approvals.store_sqlite import SqliteApprovalStore
from baton.cli import app as cli
from services.approvals.api import SESSION_COOKIE, ChangeSignal, create_app
from tests.harness.approvals import OTHER_QUEUE, QUEUE, TOKEN, approval_request, auth, reviewers, serve


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[ApprovalDesk]:
    store = SqliteApprovalStore(tmp_path / "approvals.db")
    await store.setup()
    try:
        yield ApprovalDesk(store)
    finally:
        await store.close()


@pytest.fixture
def app(desk: ApprovalDesk) -> FastAPI:
    return create_app(desk, reviewers())


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://approvals.test") as c:
        yield c


async def test_every_api_route_answers_401_without_a_token_or_with_an_unknown_one_and_says_how(
    desk: ApprovalDesk, client: httpx.AsyncClient
) -> None:
    await desk.receive(approval_request("a1"))
    routes = [
        ("GET", "/api/approvals"),
        ("GET", "/api/approvals/a1"),
        ("POST", "/api/approvals/a1/approve"),
        ("POST", "/api/approvals/a1/reject"),
        ("GET", "/api/me"),
        ("GET", "/api/stats"),
        ("GET", "/api/stream"),
    ]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": TOKEN["alice"]}):
        for method, path in routes:
            body = {"digest": "x", "reason": "r"} if method == "POST" else None
            response = await client.request(method, path, headers=headers, json=body)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == 'Bearer realm="baton-approvals"'
            assert response.json()["code"] == "UNAUTHENTICATED"
            assert "Authorization: Bearer <token>" in response.json()["message"]
    assert (await desk.get("a1")).votes == ()


async def test_a_reviewer_sees_and_decides_only_their_queues(desk: ApprovalDesk, client: httpx.AsyncClient) -> None:
    await desk.receive(approval_request("a1", queue=QUEUE))
    await desk.receive(approval_request("b1", queue=OTHER_QUEUE))
    digest = (await desk.get("a1")).digest

    listed = await client.get("/api/approvals", headers=auth("dave"))
    assert [s["id"] for s in listed.json()] == ["b1"]
    wrong = await client.get("/api/approvals", params={"queue": QUEUE}, headers=auth("dave"))
    assert (wrong.status_code, wrong.json()["code"]) == (403, "WRONG_QUEUE")
    shown = await client.get("/api/approvals/a1", headers=auth("dave"))
    assert (shown.status_code, shown.json()["code"]) == (403, "WRONG_QUEUE")
    decided = await client.post("/api/approvals/a1/approve", json={"digest": digest}, headers=auth("dave"))
    assert (decided.status_code, decided.json()["code"]) == (403, "WRONG_QUEUE")

    carol = await client.get("/api/approvals", headers=auth("carol"))
    assert sorted(s["id"] for s in carol.json()) == ["a1", "b1"]
    only = await client.get("/api/approvals", params={"queue": OTHER_QUEUE}, headers=auth("carol"))
    assert [s["id"] for s in only.json()] == ["b1"]
    after = await desk.get("a1")
    assert (after.state, after.votes) == (ApprovalState.PENDING, ())


async def test_a_viewer_reads_but_cannot_decide(desk: ApprovalDesk, client: httpx.AsyncClient) -> None:
    await desk.receive(approval_request("a1"))
    digest = (await desk.get("a1")).digest
    listed = await client.get("/api/approvals", headers=auth("victor"))
    assert [s["id"] for s in listed.json()] == ["a1"]
    for kind, body in (("approve", {"digest": digest}), ("reject", {"digest": digest, "reason": "no"})):
        response = await client.post(f"/api/approvals/a1/{kind}", json=body, headers=auth("victor"))
        assert (response.status_code, response.json()["code"]) == (403, "NOT_APPROVER")
    after = await desk.get("a1")
    assert (after.state, after.votes) == (ApprovalState.PENDING, ())


async def test_two_of_three_needs_two_distinct_reviewers(desk: ApprovalDesk, client: httpx.AsyncClient) -> None:
    await desk.receive(approval_request("a1", required=2))
    summary = (await client.get("/api/approvals/a1", headers=auth("alice"))).json()
    assert summary["state"] == "PENDING"
    digest = summary["digest"]
    assert digest == (await desk.get("a1")).digest

    first = await client.post("/api/approvals/a1/approve", json={"digest": digest}, headers=auth("alice"))
    assert first.status_code == 200
    assert first.json()["state"] == "PENDING"
    again = await client.post("/api/approvals/a1/approve", json={"digest": digest}, headers=auth("alice"))
    assert (again.status_code, again.json()["code"]) == (409, "ALREADY_VOTED")
    assert (await desk.get("a1")).state is ApprovalState.PENDING

    second = await client.post(
        "/api/approvals/a1/approve", json={"digest": digest, "reason": "ok"}, headers=auth("bob")
    )
    assert second.status_code == 200
    assert second.json()["state"] == "APPROVED"
    late = await client.post("/api/approvals/a1/approve", json={"digest": digest}, headers=auth("carol"))
    assert (late.status_code, late.json()["code"]) == (409, "ALREADY_DECIDED")

    record = await desk.get("a1")
    assert record.state is ApprovalState.APPROVED
    assert record.decided_by == ("alice", "bob")
    assert [(v.reviewer, v.kind) for v in record.votes] == [("alice", "approve"), ("bob", "approve")]


async def test_a_double_click_approves_once(desk: ApprovalDesk, client: httpx.AsyncClient) -> None:
    await desk.receive(approval_request("a1"))
    digest = (await desk.get("a1")).digest
    clicks = await asyncio.gather(
        *(client.post("/api/approvals/a1/approve", json={"digest": digest}, headers=auth("alice")) for _ in range(2))
    )
    assert sorted(r.status_code for r in clicks) == [200, 409]
    refused = next(r for r in clicks if r.status_code == 409)
    assert refused.json()["code"] in {"ALREADY_DECIDED", "ALREADY_VOTED"}
    record = await desk.get("a1")
    assert record.state is ApprovalState.APPROVED
    assert [v.reviewer for v in record.votes] == ["alice"]


async def test_a_changed_digest_is_409_and_changes_nothing(desk: ApprovalDesk, client: httpx.AsyncClient) -> None:
    await desk.receive(approval_request("a1"))
    before = await desk.get("a1")
    stale = approval_request("a1", amount=99_999).action.digest()
    assert stale != before.digest
    response = await client.post("/api/approvals/a1/approve", json={"digest": stale}, headers=auth("alice"))
    assert (response.status_code, response.json()["code"]) == (409, "ACTION_CHANGED")
    assert await desk.get("a1") == before


async def test_an_unknown_approval_is_404(desk: ApprovalDesk, client: httpx.AsyncClient) -> None:
    shown = await client.get("/api/approvals/nope", headers=auth("alice"))
    assert (shown.status_code, shown.json()["code"]) == (404, "UNKNOWN_APPROVAL")
    decided = await client.post("/api/approvals/nope/approve", json={"digest": "0" * 64}, headers=auth("alice"))
    assert (decided.status_code, decided.json()["code"]) == (404, "UNKNOWN_APPROVAL")


async def test_a_rejection_without_a_reason_is_422_and_changes_nothing(
    desk: ApprovalDesk, client: httpx.AsyncClient
) -> None:
    await desk.receive(approval_request("a1"))
    before = await desk.get("a1")
    for body in ({"digest": before.digest, "reason": ""}, {"digest": before.digest, "reason": "   "}):
        response = await client.post("/api/approvals/a1/reject", json=body, headers=auth("alice"))
        assert (response.status_code, response.json()["code"]) == (422, "REASON_REQUIRED")
    missing = await client.post("/api/approvals/a1/reject", json={"digest": before.digest}, headers=auth("alice"))
    assert (missing.status_code, missing.json()["code"]) == (422, "INVALID_REQUEST")
    assert "reason" in missing.json()["message"]
    assert await desk.get("a1") == before

    rejected = await client.post(
        "/api/approvals/a1/reject", json={"digest": before.digest, "reason": "not this customer"}, headers=auth("bob")
    )
    assert (rejected.status_code, rejected.json()["state"]) == (200, "REJECTED")
    record = await desk.get("a1")
    assert (record.state, record.decided_by) == (ApprovalState.REJECTED, ("bob",))


async def test_me_and_stats(desk: ApprovalDesk, client: httpx.AsyncClient) -> None:
    me = await client.get("/api/me", headers=auth("carol"))
    assert me.json() == {
        "name": "carol",
        "queues": sorted([QUEUE, OTHER_QUEUE]),
        "roles": ["approver"],
        "approves": True,
    }
    stats = await client.get("/api/stats", headers=auth("victor"))
    assert stats.status_code == 200
    assert isinstance(stats.json(), dict)


async def test_a_session_cookie_signs_the_page_in_and_a_forged_one_does_not(client: httpx.AsyncClient) -> None:
    refused = await client.post("/api/session", json={"token": "guess"})
    assert (refused.status_code, refused.json()["code"]) == (401, "UNAUTHENTICATED")
    signed_in = await client.post("/api/session", json={"token": TOKEN["bob"]})
    assert signed_in.status_code == 204
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    value = client.cookies[SESSION_COOKIE]
    assert (await client.get("/api/me")).json()["name"] == "bob"

    client.cookies.set(SESSION_COOKIE, value.replace("bob.", "alice.", 1))
    assert (await client.get("/api/me")).status_code == 401
    client.cookies.set(SESSION_COOKIE, value)
    signed_out = await client.delete("/api/session")
    assert signed_out.status_code == 204
    client.cookies.clear()
    assert (await client.get("/api/me")).status_code == 401


async def test_openapi_documents_every_route_for_integrators(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    routes = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes == {
        ("/api/session", "post"),
        ("/api/session", "delete"),
        ("/api/me", "get"),
        ("/api/approvals", "get"),
        ("/api/approvals/{approval_id}", "get"),
        ("/api/approvals/{approval_id}/approve", "post"),
        ("/api/approvals/{approval_id}/reject", "post"),
        ("/api/stats", "get"),
        ("/api/stream", "get"),
    }
    approve = spec["paths"]["/api/approvals/{approval_id}/approve"]["post"]
    assert approve["summary"]
    assert set(approve["responses"]) >= {"200", "401", "403", "404", "409", "422"}
    assert approve["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    summary = spec["components"]["schemas"]["ApprovalSummary"]
    assert {"id", "state", "queue", "digest", "what_changes", "why", "policy_reason"} <= set(summary["properties"])
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyCookie"}
    assert approve["security"] == [{"HTTPBearer": []}, {"APIKeyCookie": []}]
    assert (await client.get("/docs")).status_code == 200


async def _next_event(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("event: "):
            return line.removeprefix("event: ")
    raise AssertionError("the stream ended")


async def test_the_stream_says_changed_at_once_when_this_replica_is_told(desk: ApprovalDesk) -> None:
    changes = ChangeSignal()
    # Polling an hour apart: only the signal can wake the stream within the test's timeout.
    app = create_app(desk, reviewers(), changes=changes, poll_interval_s=3600)
    assert app.state.changes is changes
    async with (
        serve(app) as url,
        httpx.AsyncClient(base_url=url) as http,
        http.stream("GET", "/api/stream", headers=auth("alice")) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert await asyncio.wait_for(_next_event(lines), 5) == "changed"
        await desk.receive(approval_request("a1"))
        changes.changed()
        assert await asyncio.wait_for(_next_event(lines), 5) == "changed"


async def test_the_stream_finds_another_replicas_change_by_polling(desk: ApprovalDesk) -> None:
    app = create_app(desk, reviewers(), poll_interval_s=0.05)
    async with (
        serve(app) as url,
        httpx.AsyncClient(base_url=url) as http,
        http.stream("GET", "/api/stream", headers=auth("bob")) as stream,
    ):
        lines = stream.aiter_lines()
        assert await asyncio.wait_for(_next_event(lines), 5) == "changed"
        await desk.receive(approval_request("a1"))  # as another replica would: nobody signals this one
        assert await asyncio.wait_for(_next_event(lines), 5) == "changed"


async def test_the_cli_lists_shows_approves_and_rejects(desk: ApprovalDesk) -> None:
    await desk.receive(approval_request("a1"))
    await desk.receive(approval_request("a2"))
    runner = CliRunner()

    async with serve(create_app(desk, reviewers())) as url:

        async def baton(*args: str, token: str = TOKEN["alice"]) -> tuple[int, str]:
            env = {"BATON_APPROVALS_URL": url, "BATON_APPROVALS_TOKEN": token, "COLUMNS": "200"}
            # The CLI's HTTP client blocks: run it off the loop that serves it.
            result = await asyncio.to_thread(runner.invoke, cli, ["approvals", *args], env=env)
            return result.exit_code, result.output

        code, out = await baton("list")
        assert code == 0, out
        assert "a1" in out and "a2" in out and QUEUE in out
        code, out = await baton("show", "a1")
        assert code == 0, out
        assert "the customer of T-a1 was charged twice" in out
        assert "refunds above 100 USD need a support lead" in out
        assert (await desk.get("a1")).digest in out

        code, out = await baton("approve", "a1", "--reason", "checked the ledger")
        assert (code, out.strip()) == (0, "approved a1: APPROVED, 1 of 1 approvals")
        code, out = await baton("reject", "a2", "--reason", "duplicate ticket")
        assert (code, out.strip()) == (0, "rejected a2: REJECTED")
        code, out = await baton("list")
        assert (code, out.strip()) == (0, "nothing waits for you")

        code, out = await baton("approve", "a1")
        assert code == 1
        assert "(ALREADY_DECIDED)" in out
        code, out = await baton("list", token="wrong")
        assert code == 1
        assert "(UNAUTHENTICATED)" in out
        code, out = await baton("stats")
        assert code == 0, out
        total = next(line for line in out.splitlines() if "total" in line)
        # requested 2, approved 1, rejected 1, expired 0, escalated 0, pending 0; reviewers agreed with 1 of 2
        assert [c.strip() for c in total.split("│")[2:8]] == ["2", "1", "1", "0", "0", "0"] and "50%" in total, out

    a1, a2 = await desk.get("a1"), await desk.get("a2")
    assert (a1.state, a1.decided_by, a1.votes[0].reason) == (ApprovalState.APPROVED, ("alice",), "checked the ledger")
    assert (a2.state, a2.decided_by, a2.votes[0].reason) == (ApprovalState.REJECTED, ("alice",), "duplicate ticket")


async def test_the_page_is_one_self_contained_file(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>Baton approvals</title>" in page.text
    assert "src=" not in page.text and "https://" not in page.text and "@import" not in page.text


async def test_a_stream_ends_after_its_lifetime_so_the_browser_reconnects_and_is_authenticated_again(
    desk: ApprovalDesk,
) -> None:
    app = create_app(desk, reviewers(), poll_interval_s=3600, stream_lifetime_s=0.2)
    async with (
        serve(app) as url,
        httpx.AsyncClient(base_url=url) as http,
        http.stream("GET", "/api/stream", headers=auth("alice")) as stream,
    ):
        body = await asyncio.wait_for(stream.aread(), 5)
    assert body == b"retry: 2000\nevent: changed\ndata: {}\n\n"


async def test_a_busy_queue_never_crowds_another_reviewers_queue_out_of_their_list(
    desk: ApprovalDesk, client: httpx.AsyncClient
) -> None:
    for i in range(510):  # older than the one in dave's queue, and more than one page of the store
        await desk.receive(approval_request(f"busy-{i:03d}"))
    await desk.receive(approval_request("theirs", queue=OTHER_QUEUE))
    listed = (await client.get("/api/approvals", headers=auth("dave"))).json()
    assert [s["id"] for s in listed] == ["theirs"]


async def test_the_figures_a_reviewer_gets_are_those_of_the_queues_they_see(
    desk: ApprovalDesk, client: httpx.AsyncClient
) -> None:
    await desk.receive(approval_request("mine", queue=OTHER_QUEUE))
    for i in range(3):
        await desk.receive(approval_request(f"theirs-{i}"))
    dave = (await client.get("/api/stats", headers=auth("dave"))).json()["groups"]["total"]
    everyone = (await client.get("/api/stats", headers=auth("victor"))).json()["groups"]["total"]
    assert (dave["requested"], dave["pending"], everyone["requested"]) == (1, 1, 4)
