"""Screenshots of the admin page for the README (docs/screenshots/).

Skipped unless UPDATE_SCREENSHOTS=1:
`UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/web/test_screenshots.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from app.services.usage_ledger import usage_writer
from tests.conftest import LLMEnv
from tests.upstream import StandInServer
from tests.upstream.ollama_server import OllamaStandIn
from tests.upstream.openrouter_server import OpenRouterStandIn
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


@pytest.mark.usefixtures("no_aws_credentials")
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
    with (
        OllamaStandIn(
            models={"llama3.2:latest": 131072, "qwen3:0.6b": 40960}, loaded={"qwen3:0.6b": 8192}
        ) as ollama,
        OpenRouterStandIn() as openrouter,
    ):
        llm_env.set(
            lmstudio_model="llama-3.2-3b-instruct",
            ollama_base_url=ollama.base_url,
            ollama_model="qwen3:0.6b",
            openrouter_base_url=openrouter.base_url,
            openrouter_api_key=openrouter.api_key,
            openrouter_model="openai/gpt-4o",
            llm_fallback_providers=["ollama", "openrouter"],
            llm_fallback_allow_cloud=["openrouter"],
        )
        await page.set_viewport_size(viewport)
        await log_in(page)
        await expect(page.locator('[data-provider="lmstudio"] .model-count')).to_have_text("4")
        await expect(page.locator('[data-provider="ollama"] .model-count')).to_have_text("2")
        await _shoot(page, f"{label}-providers")

        await page.goto("/admin/#settings")
        await expect(page.get_by_label("LM Studio model", exact=True)).to_be_enabled()
        await expect(page.get_by_label("Ollama model", exact=True)).to_be_enabled()
        await expect(page.locator("#setting-openrouter_model-note")).to_contain_text("2 models")
        await page.get_by_label("OpenRouter model", exact=True).fill("acme/not-a-model")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#settings-warnings")).to_be_visible()
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

    await usage_writer.flush()  # the call above, in the ledger now
    await page.goto("/admin/#usage")
    await page.get_by_label("Group by").select_option("model")
    await expect(page.locator("#usage-table tfoot")).to_be_visible()
    await _shoot(page, f"{label}-usage")
