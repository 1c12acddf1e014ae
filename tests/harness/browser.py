"""A page in Debian's chromium driven by Playwright (never `playwright install`: the browser comes from apt)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

from playwright.async_api import Page, async_playwright

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextlib.asynccontextmanager
async def browser_page(*, timeout_ms: float = 5_000) -> AsyncIterator[Page]:
    """A fresh page in a headless chromium, closed afterwards."""
    assert CHROMIUM is not None, "chromium is not installed: scripts/ensure-tools.sh installs Debian's (as root)"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(timeout_ms)
            yield await context.new_page()
        finally:
            await browser.close()
