"""The reviewer page in a real browser (Debian's chromium driven by Playwright) over the real desk and store."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from baton.approvals.desk import ApprovalDesk
from baton.approvals.model import ApprovalState
from baton.approvals.store_sqlite import SqliteApprovalStore
from services.approvals.api import ChangeSignal, create_app
from tests.harness.approvals import QUEUE, TOKEN, approval_request, reviewers, serve

CHROMIUM = shutil.which("chromium")

# Locally a machine without chromium skips this; under CI (which installs it: scripts/ensure-tools.sh) it fails.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="no chromium on PATH (scripts/ensure-tools.sh installs Debian's as root)",
)


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[ApprovalDesk]:
    store = SqliteApprovalStore(tmp_path / "approvals.db")
    await store.setup()
    try:
        yield ApprovalDesk(store)
    finally:
        await store.close()


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    assert CHROMIUM is not None, "CI must have chromium: scripts/ensure-tools.sh installs it (apt, as root)"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = await browser.new_context()
            context.set_default_timeout(5_000)
            yield await context.new_page()
        finally:
            await browser.close()


async def test_a_reviewer_signs_in_approves_one_rejects_another_and_sees_a_new_one_arrive(
    desk: ApprovalDesk, page: Page
) -> None:
    await desk.receive(approval_request("a1", amount=120))
    await desk.receive(approval_request("a2", amount=450))
    changes = ChangeSignal()
    # Polling an hour apart: the new approval can only appear through the service's signal and the stream.
    app = create_app(desk, reviewers(), changes=changes, poll_interval_s=3600)

    async with serve(app) as url:
        await page.goto(url)
        await page.get_by_label("Reviewer token").fill("not-a-token")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_test_id("signin-error")).to_contain_text("unknown token")

        await page.get_by_label("Reviewer token").fill(TOKEN["alice"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_test_id("whoami")).to_have_text("alice (approver)")
        queue = page.locator(f'[data-testid=queue][data-queue="{QUEUE}"]')
        items = queue.get_by_test_id("approval-item")
        await expect(items).to_have_count(2)
        await expect(page.get_by_test_id("live-status")).to_have_text("live")

        await page.locator("[data-approval-id=a1]").click()
        await expect(page.get_by_test_id("detail-id")).to_have_text("a1")
        refunded = page.locator('[data-testid=diff-row]:has(td:first-child:text-is("refunded"))')
        await expect(refunded.locator("td")).to_have_text(["refunded", "0", "120"])
        await expect(page.get_by_test_id("detail-why")).to_have_text("the customer of T-a1 was charged twice")
        await expect(page.get_by_test_id("detail-policy-reason")).to_have_text(
            "refunds above 100 USD need a support lead"
        )
        await expect(page.get_by_test_id("detail-confidence")).to_have_text("82%")
        await expect(page.get_by_test_id("detail-lineage")).to_have_text("triage_agent → refund_preview")
        await expect(page.get_by_test_id("detail-votes")).to_have_text("0 of 1 approvals")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_test_id("decision-result")).to_have_text("Approved.")
        await expect(page.get_by_test_id("detail-state")).to_have_text("APPROVED")
        await expect(items).to_have_count(1)

        await page.locator("[data-approval-id=a2]").click()
        await expect(page.get_by_test_id("detail-id")).to_have_text("a2")
        await page.get_by_role("button", name="Reject").click()
        await expect(page.get_by_test_id("decision-error")).to_contain_text("needs a reason")
        assert (await desk.get("a2")).state is ApprovalState.PENDING
        await page.get_by_label("Reason").fill("the customer was refunded by hand")
        await page.get_by_role("button", name="Reject").click()
        await expect(page.get_by_test_id("decision-result")).to_have_text("Rejected.")
        await expect(page.get_by_test_id("pending-empty")).to_be_visible()

        a1, a2 = await desk.get("a1"), await desk.get("a2")
        assert (a1.state, a1.decided_by) == (ApprovalState.APPROVED, ("alice",))
        assert (a2.state, a2.decided_by) == (ApprovalState.REJECTED, ("alice",))
        assert a2.votes[-1].reason == "the customer was refunded by hand"

        await desk.receive(approval_request("a3"))
        changes.changed()
        await expect(page.locator("[data-approval-id=a3]")).to_be_visible()
        await expect(items).to_have_count(1)
        await page.close()  # ends its event stream, which would otherwise hold the server's shutdown
