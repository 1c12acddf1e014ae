"""Reviewers decide through the page in a real browser (Debian's chromium, Playwright) while every service runs on
the embedded bus: one refund approved by two reviewers, one rejected with a reason, and the two workflows end
accordingly — completed with the refund paid once, halted with the reviewer's reason and nothing paid."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from baton.bus.embedded import EmbeddedBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import WorkflowCompleted, WorkflowHalted
from baton_demo.mesh import start_mesh
from baton_demo.reviewer import DEMO_TOKENS
from baton_demo.world import World
from tests.harness.browser import CHROMIUM, browser_page

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="no chromium on PATH (scripts/ensure-tools.sh installs Debian's as root)",
)


async def _sign_in(page: Page, reviewer: str) -> None:
    if await page.get_by_test_id("signout-button").is_visible():
        await page.get_by_test_id("signout-button").click()
    await page.get_by_label("Reviewer token").fill(DEMO_TOKENS[reviewer])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("whoami")).to_have_text(f"{reviewer} (approver)")


async def test_the_page_approves_one_refund_and_rejects_another_and_the_workflows_end_accordingly(
    tmp_path: Path,
) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=300, seed=5)
    approve_ticket, reject_ticket = [t for t in world.ticket_ids() if world.preview_refund(t)["amount"] > 500][:2]
    bus = EmbeddedBus(partitions=4)
    await bus.start()
    mesh = await start_mesh(bus, world_db=tmp_path / "world.db", approvals=True, reviewer=False, approvals_http_port=0)
    url = f"http://127.0.0.1:{mesh.apps['approvals'].port}"
    client = BatonClient(mesh.events("test-client"))
    outcomes: dict[str, Outcome] = {}

    async def collect() -> None:
        async for outcome in client.outcomes():
            outcomes.setdefault(outcome.envelope.workflow_id, outcome)
            if len(outcomes) == 2:
                return

    try:
        for wf, ticket in (("wf-page-approve", approve_ticket), ("wf-page-reject", reject_ticket)):
            tenant = world.tenant_of("ticket_id", ticket)
            assert tenant is not None
            await client.submit("support_refund", {"ticket_id": ticket}, tenant_id=tenant, workflow_id=wf)
        ids: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=url) as api:
            for _ in range(500):
                listed = (
                    await api.get("/api/approvals", headers={"Authorization": f"Bearer {DEMO_TOKENS['alice']}"})
                ).json()
                ids = {s["decision_point"]["workflow_id"]: s["id"] for s in listed}
                if len(ids) == 2:
                    break
                await asyncio.sleep(0.02)
        assert set(ids) == {"wf-page-approve", "wf-page-reject"}

        async with browser_page() as page:
            await page.goto(url)
            await _sign_in(page, "alice")
            await page.locator(f"[data-approval-id={ids['wf-page-approve']}]").click()
            await expect(page.get_by_test_id("detail-votes")).to_have_text("0 of 2 approvals")
            await page.get_by_role("button", name="Approve").click()
            await expect(page.get_by_test_id("detail-votes")).to_have_text("1 of 2 approvals")
            await page.locator(f"[data-approval-id={ids['wf-page-reject']}]").click()
            await page.get_by_label("Reason").fill("the order was already refunded by hand")
            await page.get_by_role("button", name="Reject").click()
            await expect(page.get_by_test_id("decision-result")).to_have_text("Rejected.")
            await _sign_in(page, "bob")
            await page.locator(f"[data-approval-id={ids['wf-page-approve']}]").click()
            await page.get_by_role("button", name="Approve").click()
            await expect(page.get_by_test_id("decision-result")).to_have_text("Approved.")
            await page.close()
        await asyncio.wait_for(collect(), 60)
    finally:
        await mesh.stop()
        await bus.stop()
    assert isinstance(outcomes["wf-page-approve"], WorkflowCompleted)
    halted = outcomes["wf-page-reject"]
    assert isinstance(halted, WorkflowHalted) and halted.reason_code == "APPROVAL_REJECTED"
    assert "rejected by alice: the order was already refunded by hand" in halted.reason
    db = sqlite3.connect(world.path)
    paid = db.execute(
        "SELECT t.id, c.executions FROM refunds r JOIN tool_calls c ON c.idempotency_key = r.idempotency_key "
        "JOIN tickets t ON t.order_id = r.order_id WHERE t.id IN (?, ?)",
        (approve_ticket, reject_ticket),
    ).fetchall()
    db.close()
    world.close()
    assert paid == [(approve_ticket, 1)]
