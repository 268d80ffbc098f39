"""Screenshots of the admin page for the README (docs/screenshots/).

Skipped unless UPDATE_SCREENSHOTS=1:
`UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/web/test_screenshots.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.conftest import LLMEnv
from tests.upstream import StandInServer
from tests.web.conftest import DESKTOP, PHONE, log_in

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = [
    pytest.mark.parametrize("scratch_databases", ["sqlite"], indirect=True),
    pytest.mark.skipif(
        os.environ.get("UPDATE_SCREENSHOTS") != "1", reason="set UPDATE_SCREENSHOTS=1"
    ),
]


async def _shoot(page: Page, name: str) -> None:
    await page.wait_for_timeout(150)  # let focus rings and fonts settle
    await page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


@pytest.mark.parametrize(("label", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
async def test_screenshots(
    page: Page,
    llm_env: LLMEnv,
    upstream: StandInServer,
    label: str,
    viewport: dict[str, int],
) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    upstream.set_models(
        ["qwen2.5-7b-instruct", "llama-3.2-3b-instruct", "mistral-7b-instruct", "nomic-embed-text"],
        loaded=["qwen2.5-7b-instruct", "llama-3.2-3b-instruct"],
    )
    llm_env.set(lmstudio_model="llama-3.2-3b-instruct")
    await page.set_viewport_size(viewport)
    await log_in(page)
    await expect(page.locator('[data-provider="lmstudio"] .model-count')).to_have_text("4")
    await _shoot(page, f"{label}-providers")

    await page.goto("/admin/#settings")
    await expect(page.get_by_label("LM Studio model", exact=True)).to_be_enabled()
    await _shoot(page, f"{label}-settings")

    await page.goto("/admin/#models")
    await expect(page.locator('tr[data-model="mistral-7b-instruct"]')).to_be_visible()
    await _shoot(page, f"{label}-models")

    await page.goto("/admin/#try")
    await page.get_by_label("Prompt").first.fill("Explain quantum computing in one sentence.")
    upstream.reply(
        "Quantum computers use qubits, which can hold a blend of 0 and 1 at once, so for some "
        "problems they explore many possibilities together instead of one at a time."
    )
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator('[data-stat="provider"]')).to_have_text("lmstudio")
    await _shoot(page, f"{label}-try")

    await page.goto("/admin/#users")
    await expect(page.locator("#users-table tbody tr").first).to_be_visible()
    await _shoot(page, f"{label}-users")
