"""The admin page's per-provider parts in a real browser: each provider's model picked from
what discovery offers, errors in words per provider, the fallback order editor with its
cloud opt-in, the warnings a save answers with, and every provider's health.

Against the real app and the stand-ins for LM Studio, Ollama and OpenRouter; SQLite only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from tests.conftest import LLMEnv
from tests.upstream import StandInServer
from tests.upstream.ollama_server import OllamaStandIn
from tests.upstream.openrouter_server import OpenRouterStandIn
from tests.web.conftest import PHONE, log_in

pytestmark = pytest.mark.parametrize("scratch_databases", ["sqlite"], indirect=True)

Headers = dict[str, str]
LMSTUDIO_MODEL = "llama-3.2-3b-instruct"


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaStandIn]:
    """Ollama with two models, one loaded with an 8K context."""
    with OllamaStandIn(
        models={"llama3.2:latest": 131072, "qwen3:0.6b": 40960}, loaded={"qwen3:0.6b": 8192}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def openrouter() -> Iterator[OpenRouterStandIn]:
    with OpenRouterStandIn() as server:
        yield server


@dataclass
class ProvidersEnv:
    """The env below, which `set` changes on top of."""

    llm_env: LLMEnv
    values: dict[str, object]

    def set(self, **changes: object) -> None:
        self.llm_env.set(**{**self.values, **changes})


@pytest.fixture
def providers(
    llm_env: LLMEnv, upstream: StandInServer, ollama: OllamaStandIn, openrouter: OpenRouterStandIn
) -> ProvidersEnv:
    """LM Studio active; Ollama and OpenRouter reachable, each with a model; OpenAI and
    Bedrock without credentials."""
    ollama.reset()
    openrouter.reset()
    env = ProvidersEnv(
        llm_env,
        {
            "lmstudio_model": LMSTUDIO_MODEL,
            "ollama_base_url": ollama.base_url,
            "ollama_model": "llama3.2:latest",
            "openrouter_base_url": openrouter.base_url,
            "openrouter_api_key": openrouter.api_key,
            "openrouter_model": "openai/gpt-4o",
        },
    )
    env.set()
    return env


async def open_settings(page: Page) -> None:
    await log_in(page)
    await page.get_by_role("link", name="Settings").click()
    await expect(page.locator("#fallback-cloud-hint")).not_to_be_empty()


async def saved_settings(client: httpx.AsyncClient, headers: Headers) -> dict[str, object]:
    response = await client.get("/api/v1/llm-settings", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_ollama_discovery_fills_its_list_with_loaded_state_and_context(
    page: Page, providers: ProvidersEnv, client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await open_settings(page)
    select = page.get_by_label("Ollama model", exact=True)
    await expect(select).to_be_enabled()
    await expect(select.locator("option")).to_have_text(
        [
            "llama3.2:latest — not loaded · 131,072 tokens",
            "qwen3:0.6b — loaded · 8,192 tokens",
        ]
    )
    note = page.locator("#setting-ollama_model-note")
    await expect(note).to_have_text(
        re.compile(r"^2 models at http://127\.0\.0\.1:\d+, 1 loaded\.$")
    )
    field = page.locator('[data-field="ollama_model"]')
    await expect(field.locator(".source")).to_have_text("from the environment · OLLAMA_MODEL")

    await select.select_option("qwen3:0.6b")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#settings-message")).to_contain_text("Saved: lmstudio")
    await expect(field.locator(".source")).to_have_text("saved · OLLAMA_MODEL")
    assert (await saved_settings(client, admin_headers))["ollama_model"] == "qwen3:0.6b"


async def test_a_cloud_model_is_typed_with_discovery_as_suggestions(
    page: Page, providers: ProvidersEnv, client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await open_settings(page)
    box = page.get_by_label("OpenRouter model", exact=True)
    await expect(box).to_have_value("openai/gpt-4o")
    suggestions = page.locator("#setting-openrouter_model-suggestions option")
    await expect(suggestions).to_have_text(
        ["openai/gpt-4o — 128,000 tokens", "meta-llama/llama-3.1-8b-instruct — 131,072 tokens"]
    )
    await expect(page.locator("#setting-openrouter_model-note")).to_contain_text(
        "2 models at http://127.0.0.1"
    )
    await box.fill("meta-llama/llama-3.1-8b-instruct")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#settings-message")).to_contain_text("Saved: lmstudio")
    saved = await saved_settings(client, admin_headers)
    assert saved["openrouter_model"] == "meta-llama/llama-3.1-8b-instruct"


async def test_each_provider_says_in_words_why_it_offers_no_models(
    page: Page, providers: ProvidersEnv, upstream: StandInServer, ollama: OllamaStandIn
) -> None:
    providers.set(ollama_base_url="http://127.0.0.1:9")  # nothing listens there
    upstream.no_models_loaded()
    await open_settings(page)

    def note(provider: str) -> Locator:
        return page.locator(f"#setting-{provider}_model-note")

    await expect(note("ollama")).to_contain_text("Cannot connect to Ollama")
    await expect(note("ollama")).to_contain_text("You can still type a model name.")
    await expect(note("openai")).to_contain_text("OPENAI_API_KEY is not set")
    await expect(note("lmstudio")).to_contain_text("has no model loaded")
    for provider in ("ollama", "openai", "lmstudio"):
        await expect(note(provider)).to_have_class(re.compile("error"))
    # Still usable: the unreachable provider's model can be typed.
    await expect(page.get_by_label("Ollama model", exact=True)).to_have_value("llama3.2:latest")


async def test_an_ollama_without_models_says_so(
    page: Page, providers: ProvidersEnv, ollama: OllamaStandIn
) -> None:
    models, ollama.models = ollama.models, {}
    try:
        await open_settings(page)
        await expect(page.locator("#setting-ollama_model-note")).to_contain_text("offers no models")
    finally:
        ollama.models = models


async def test_fallback_order_is_edited_by_keyboard_and_saved_as_the_api_returns_it(
    page: Page, providers: ProvidersEnv, client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await open_settings(page)
    await expect(page.locator("#fallback-source")).to_have_text("not set · LLM_FALLBACK_PROVIDERS")
    add = page.get_by_label("Add a provider to the fallback order")
    await expect(add.locator("option")).to_have_text(
        ["OpenAI (cloud)", "OpenRouter (cloud)", "Ollama (local)", "AWS Bedrock (cloud)"]
    )
    await add.select_option("ollama")
    await page.get_by_role("button", name="Add", exact=True).click()
    await add.select_option("openrouter")
    await page.get_by_role("button", name="Add", exact=True).click()
    entries = page.locator("#fallback-list li")
    await expect(entries).to_have_count(2)
    await expect(entries.nth(1)).to_contain_text("needs Allow cloud")

    # Keyboard only: tick the opt-in, then move OpenRouter above Ollama.
    await page.get_by_label("Allow cloud fallback to OpenRouter").focus()
    await page.keyboard.press("Space")
    await expect(page.get_by_label("Allow cloud fallback to OpenRouter")).to_be_checked()
    await expect(entries.nth(1)).not_to_contain_text("needs Allow cloud")
    await page.get_by_role("button", name="Move OpenRouter up").focus()
    await page.keyboard.press("Enter")
    await expect(entries.locator("strong")).to_have_text(["OpenRouter", "Ollama"])
    await expect(page.locator("#fallback-status")).to_have_text(
        "OpenRouter moved to position 1 of 2."
    )
    # The first entry cannot go up: the keyboard stays on the moved entry, on "down".
    await expect(page.get_by_role("button", name="Move OpenRouter down")).to_be_focused()

    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#settings-message")).to_contain_text("fallback openrouter → ollama")
    saved = await saved_settings(client, admin_headers)
    assert saved["fallback_providers"] == [
        {"provider": "openrouter", "allow_cloud": True},
        {"provider": "ollama", "allow_cloud": False},
    ]
    await page.reload()
    await expect(page.locator("#fallback-source")).to_have_text("saved · LLM_FALLBACK_PROVIDERS")
    await expect(entries.locator("strong")).to_have_text(["OpenRouter", "Ollama"])

    await page.get_by_role("button", name="Remove OpenRouter").click()
    await expect(page.get_by_role("button", name="Remove Ollama")).to_be_focused()
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#settings-message")).to_contain_text("fallback ollama.")
    saved = await saved_settings(client, admin_headers)
    assert saved["fallback_providers"] == [{"provider": "ollama", "allow_cloud": False}]


async def test_local_to_cloud_without_the_opt_in_is_refused_in_words(
    page: Page, providers: ProvidersEnv, client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await open_settings(page)
    await expect(page.locator("#fallback-cloud-hint")).to_have_text(
        "Local stays local: while the active provider runs on your own machines (LM Studio, "
        "Ollama), a cloud provider (OpenAI, OpenRouter, AWS Bedrock) is never used as its "
        "fallback unless you tick “Allow cloud” on that entry, because prompts would then "
        "leave your machines."
    )
    await page.get_by_label("Add a provider to the fallback order").select_option("openrouter")
    await page.get_by_role("button", name="Add", exact=True).click()
    await page.get_by_role("button", name="Save").click()
    message = page.locator("#settings-message")
    await expect(message).to_contain_text("would send prompts off this machine")
    await expect(message).to_have_class(re.compile("error"))
    assert (await saved_settings(client, admin_headers))["fallback_providers"] == []

    await page.get_by_label("Allow cloud fallback to OpenRouter").check()
    await page.get_by_role("button", name="Save").click()
    await expect(message).not_to_have_class(re.compile("error"))
    await expect(message).to_contain_text("fallback openrouter")
    saved = await saved_settings(client, admin_headers)
    assert saved["fallback_providers"] == [{"provider": "openrouter", "allow_cloud": True}]


async def test_a_save_shows_its_warnings(
    page: Page, providers: ProvidersEnv, client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await open_settings(page)
    warnings = page.locator("#settings-warnings")
    await page.get_by_label("Add a provider to the fallback order").select_option("ollama")
    await page.get_by_role("button", name="Add", exact=True).click()
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#settings-message")).to_contain_text("fallback ollama")
    await expect(warnings).to_be_hidden()

    # Ollama becomes the active provider while it is in the chain, with a name it lacks.
    await page.get_by_label("Provider", exact=True).select_option("ollama")
    await expect(page.locator("#fallback-list li")).to_contain_text("active: dropped on save")
    await page.get_by_label("Ollama model", exact=True).select_option("qwen3:0.6b")
    await page.get_by_role("button", name="Save").click()
    await expect(warnings).to_be_visible()
    await expect(warnings).to_contain_text("Saved, with warnings:")
    await expect(warnings.locator("li")).to_have_text(
        ["Ollama is the active provider, so it was removed from fallback_providers"]
    )
    saved = await saved_settings(client, admin_headers)
    assert (saved["provider"], saved["fallback_providers"]) == ("ollama", [])

    await page.get_by_label("Ollama model", exact=True).select_option("llama3.2:latest")
    await page.get_by_role("button", name="Save").click()
    await expect(warnings).to_be_hidden()


async def test_a_model_name_its_provider_lacks_is_saved_with_a_warning(
    page: Page, providers: ProvidersEnv, client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    await open_settings(page)
    await page.get_by_label("OpenRouter model", exact=True).fill("acme/not-a-model")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#settings-warnings")).to_be_visible()
    warnings = page.locator("#settings-warnings li")
    await expect(warnings).to_have_count(1)
    await expect(warnings).to_contain_text("acme/not-a-model")
    await expect(warnings).to_contain_text("OpenRouter does not offer it")
    saved = await saved_settings(client, admin_headers)
    assert saved["openrouter_model"] == "acme/not-a-model"


@pytest.mark.usefixtures("no_aws_credentials")
async def test_health_shows_all_five_providers(page: Page, providers: ProvidersEnv) -> None:
    await log_in(page)
    cards = page.locator("#providers-list [data-provider]")
    await expect(cards.locator("h3")).to_have_text(
        [
            re.compile(r"^LM Studio\s*local\s*active\s*reachable$"),
            re.compile(r"^OpenAI\s*cloud\s*not configured$"),
            re.compile(r"^OpenRouter\s*cloud\s*reachable$"),
            re.compile(r"^Ollama\s*local\s*reachable$"),
            re.compile(r"^AWS Bedrock\s*cloud\s*not configured$"),
        ]
    )
    key = {p: page.locator(f'[data-provider="{p}"] .key') for p in ("lmstudio", "openai")}
    await expect(key["lmstudio"]).to_have_text("not needed")
    await expect(page.locator('[data-provider="ollama"] .key')).to_have_text("not needed")
    await expect(key["openai"]).to_have_text("missing")
    await expect(page.locator('[data-provider="openrouter"] .key')).to_have_text("set")
    await expect(page.locator('[data-provider="ollama"] .model-count')).to_have_text("2")
    await expect(page.locator('[data-provider="openrouter"] .model-count')).to_have_text("2")
    await expect(page.locator('[data-provider="bedrock"]').get_by_role("alert")).to_contain_text(
        "No AWS credentials were found"
    )


async def test_settings_fit_a_phone(page: Page, providers: ProvidersEnv) -> None:
    await page.set_viewport_size(PHONE)
    await open_settings(page)
    await page.get_by_label("Add a provider to the fallback order").select_option("openrouter")
    await page.get_by_role("button", name="Add", exact=True).click()
    await expect(page.get_by_role("button", name="Remove OpenRouter")).to_be_visible()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"settings are {width} px wide"
