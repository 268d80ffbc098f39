"""/docs and /redoc render in a real browser with every request to another host refused."""

from __future__ import annotations

import pytest
from playwright.async_api import BrowserContext, Route

pytestmark = pytest.mark.parametrize("scratch_databases", ["sqlite"], indirect=True)


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/docs", ".opblock"),  # one block per operation
        ("/redoc", "[data-section-id^='tag/']"),  # ReDoc's sections, per tag and operation
    ],
)
async def test_the_docs_render_offline(
    context: BrowserContext, app_url: str, path: str, rendered: str
) -> None:
    elsewhere: list[str] = []

    async def offline(route: Route) -> None:
        if route.request.url.startswith(app_url + "/"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort("internetdisconnected")

    await context.route("**/*", offline)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if msg.type == "error" else None,
    )
    await page.goto(path)
    await page.locator(rendered).first.wait_for()
    assert await page.locator(rendered).count() > 5
    assert elsewhere == []
    # ReDoc's footer asks for Redocly's logo from its CDN: the page's policy refuses it
    # before any request is made, which is the one complaint allowed.
    refused_logo = 'violates the following Content Security Policy directive: "img-src'
    assert [p for p in problems if not (path == "/redoc" and refused_logo in p)] == []
