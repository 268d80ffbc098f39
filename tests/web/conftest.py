"""Fixtures for the admin page: Debian's Chromium, driven by Playwright, against the real app.

One browser serves the whole session; each test gets a fresh context (no shared storage).
Without /usr/bin/chromium the tests skip, unless CI is set: then they fail
(`make test` installs it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM_PRESENT = CHROMIUM.exists()
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Chromium for the whole session."""
    if not CHROMIUM_PRESENT:
        message = f"{CHROMIUM} is missing: `apt-get install chromium` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def context(browser: Browser, app_url: str) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (its own sessionStorage) pointed at the app."""
    ctx = await browser.new_context(base_url=app_url, viewport=DESKTOP)
    ctx.set_default_timeout(5_000)
    await ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page that fails the test on any JavaScript error or CSP violation."""
    tab = await context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    yield tab
    assert not problems, problems


async def log_in(page: Page, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    """Open the page and log in through the form."""
    await page.goto("/")
    form = page.locator("#login-form")
    await form.get_by_label("Email").fill(email)
    await form.get_by_label("Password").fill(password)
    await form.get_by_role("button", name="Log in").click()
    await page.locator("#who-email").filter(has_text=email).wait_for()
