"""The admin page in a real browser (Debian's Chromium via Playwright) against the real app
over a real socket and the stand-in LM Studio.

The page does not depend on the database backend, so these run on SQLite only: one browser
session, well under a minute.
"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Page, expect

from app.api.web_page import CONTENT_SECURITY_POLICY
from tests.conftest import ADMIN_PASSWORD, LLMEnv, UserFactory
from tests.upstream import StandInServer
from tests.web.conftest import PHONE, log_in

pytestmark = pytest.mark.parametrize("scratch_databases", ["sqlite"], indirect=True)


def _loads(upstream: StandInServer) -> list[object]:
    return [r.json for r in upstream.requests if r.path == "/api/v1/models/load"]


async def test_page_is_served_with_a_strict_csp_only_on_its_own_responses(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/", "/admin"):
        response = await client.get(path)
        assert response.status_code == 307
        assert response.headers["location"] == "/admin/"
    page = await client.get("/admin/")
    assert page.status_code == 200
    assert "<title>LLM backend" in page.text
    csp = page.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    script = await client.get("/admin/js/main.js")
    assert script.headers["content-security-policy"] == csp
    assert "javascript" in script.headers["content-type"]
    api = await client.get("/api/v1/health")
    assert "content-security-policy" not in api.headers
    assert (await client.get("/admin/../app/main.py")).status_code == 404


async def test_wrong_password_is_said_in_words(page: Page, llm_env: LLMEnv) -> None:
    await log_in_expecting_error(page, "admin@example.com", "wrong-password")
    await expect(page.locator("#login-message")).to_have_text("Incorrect email or password")
    await expect(page.locator("#app-view")).to_be_hidden()


async def log_in_expecting_error(page: Page, email: str, password: str) -> None:
    await page.goto("/")
    form = page.locator("#login-form")
    await form.get_by_label("Email").fill(email)
    await form.get_by_label("Password").fill(password)
    await form.get_by_role("button", name="Log in").click()


async def test_throttled_login_says_when_to_try_again(page: Page, llm_env: LLMEnv) -> None:
    llm_env.set(login_max_failures_per_account=2)
    email = "guesser@example.com"  # unknown accounts are throttled like real ones
    for _ in range(2):
        await log_in_expecting_error(page, email, "wrong-password")
        await expect(page.locator("#login-message")).to_have_text("Incorrect email or password")
    await log_in_expecting_error(page, email, "wrong-password")
    await expect(page.locator("#login-message")).to_have_text(
        re.compile(r"^Too many attempts: try again in \d+ s\.$")
    )
    await expect(page.locator("#app-view")).to_be_hidden()


async def test_providers_show_health_and_test_connection(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    await log_in(page)
    lmstudio = page.locator('[data-provider="lmstudio"]')
    await expect(lmstudio.get_by_text("reachable", exact=True)).to_be_visible()
    await expect(lmstudio.locator(".model-count")).to_have_text("3")
    await expect(lmstudio.locator(".latency")).to_have_text(re.compile(r"^\d+ ms$"))
    openai = page.locator('[data-provider="openai"]')
    await expect(openai.get_by_text("not configured")).to_be_visible()
    await expect(openai.get_by_role("alert")).to_contain_text("OPENAI_API_KEY is not set")

    upstream.refuse()
    await lmstudio.get_by_role("button", name="Test connection").click()
    lmstudio = page.locator('[data-provider="lmstudio"]')
    await expect(lmstudio.get_by_text("unreachable")).to_be_visible()
    await expect(lmstudio.get_by_role("alert")).to_contain_text("Cannot connect to LM Studio")


async def test_discovery_fills_the_model_list_and_a_switch_serves_the_next_answer(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    upstream.set_loaded(["llama-3.2-3b-instruct", "mistral-7b-instruct"])
    llm_env.set(lmstudio_model="llama-3.2-3b-instruct")
    await log_in(page)
    await page.get_by_role("link", name="Settings").click()
    select = page.get_by_label("LM Studio model", exact=True)
    await expect(select).to_be_enabled()
    options = select.locator("option")
    await expect(options).to_have_text(
        [
            "llama-3.2-3b-instruct — loaded · 131,072 tokens",
            "mistral-7b-instruct — loaded · 131,072 tokens",
            "codellama-7b — not loaded · 131,072 tokens",
        ]
    )
    field = page.locator('[data-field="lmstudio_model"]')
    await expect(field.locator(".source")).to_have_text("from the environment · LMSTUDIO_MODEL")

    await select.select_option("mistral-7b-instruct")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#settings-message")).to_contain_text(
        "Saved: lmstudio with model mistral-7b-instruct"
    )
    await expect(field.locator(".source")).to_have_text("saved · LMSTUDIO_MODEL")

    await page.get_by_role("link", name="Try it").click()
    await page.get_by_label("Prompt").first.fill("Which model are you?")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#stream-output")).to_have_text("Echo: Which model are you?")
    await expect(page.locator('[data-stat="model"]')).to_have_text("mistral-7b-instruct")
    assert upstream.chat_requests[-1].json["model"] == "mistral-7b-instruct"


async def test_a_reply_streams_with_its_figures(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm_env.set(lmstudio_model="codellama-7b")
    upstream.slow_stream(n_chunks=12, interval=0.05)
    await log_in(page)
    await page.get_by_role("link", name="Try it").click()
    await page.get_by_role("button", name="Send").click()
    output = page.locator("#stream-output")
    await expect(page.locator('[data-stat="status"]')).to_have_text("streaming")
    partial = await output.text_content()
    await expect(page.locator('[data-stat="provider"]')).to_have_text("lmstudio")
    final = await output.text_content()
    assert partial is not None
    assert final is not None
    assert len(partial) < len(final)  # text was shown as it arrived
    await expect(page.locator('[data-stat="model"]')).to_have_text("codellama-7b")
    await expect(page.locator('[data-stat="first token"]')).to_have_text(re.compile(r"^\d+ ms$"))
    await expect(page.locator('[data-stat="latency"]')).to_have_text(re.compile(r"^\d+ ms$"))
    await expect(page.locator('[data-stat="completion tokens"]')).to_have_text("12")
    await expect(page.locator('[data-stat="prompt tokens"]')).to_have_text(re.compile(r"^\d+$"))


async def test_stop_cancels_the_stream_upstream(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm_env.set(lmstudio_model="codellama-7b")
    upstream.slow_stream(n_chunks=400, interval=0.05)
    await log_in(page)
    await page.get_by_role("link", name="Try it").click()
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator('[data-stat="status"]')).to_have_text("streaming")
    await page.get_by_role("button", name="Stop").click()
    await expect(page.locator('[data-stat="status"]')).to_have_text("stopped")
    await expect(page.locator("#stream-message")).to_have_text(
        "Stopped: the request was cancelled."
    )
    assert await upstream.wait_for_disconnect_async(timeout=5)
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()


async def test_structured_shows_the_object_or_the_errors(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm_env.set(lmstudio_model="codellama-7b")
    await log_in(page)
    await page.get_by_role("link", name="Try it").click()
    await page.get_by_role("tab", name="Structured").click()
    await page.get_by_role("button", name="Get JSON").click()
    output = page.locator("#structured-output")
    await expect(output).to_contain_text('"population":')
    await expect(page.locator('#structured-stats [data-stat="mode"]')).to_have_text("json_schema")

    await page.get_by_label("JSON Schema").fill('{"type": "object", "required": 5}')
    await page.get_by_role("button", name="Get JSON").click()
    await expect(page.locator("#structured-message")).to_contain_text("not a valid JSON Schema")

    await page.get_by_label("JSON Schema").fill("{not json")
    await page.get_by_role("button", name="Get JSON").click()
    await expect(page.locator("#structured-message")).to_contain_text(
        "The schema is not valid JSON"
    )


async def test_load_and_unload_a_model(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    upstream.set_loaded(["llama-3.2-3b-instruct"])
    upstream.load_delay = 0.3
    await log_in(page)
    await page.get_by_role("link", name="LM Studio models").click()
    row = page.locator('tr[data-model="codellama-7b"]')
    await expect(row.locator(".state")).to_have_text("not loaded")
    await page.get_by_label("Context length").fill("8192")
    await page.get_by_label("Unload after idle").fill("30")
    await row.get_by_role("button", name="Load codellama-7b").click()
    await expect(page.locator("#models-message")).to_contain_text("Loading codellama-7b…")
    await expect(page.locator("#models-message")).to_contain_text("Loaded codellama-7b in")
    await expect(row.locator(".state")).to_have_text("loaded")
    assert _loads(upstream) == [{"model": "codellama-7b", "context_length": 8192, "ttl": 1800}]

    await row.get_by_role("button", name="Unload codellama-7b").click()
    await expect(page.locator("#models-message")).to_have_text("Unloaded codellama-7b.")
    await expect(row.locator(".state")).to_have_text("not loaded")


async def test_load_on_an_lmstudio_older_than_0_4_says_so(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    upstream.set_loaded(["llama-3.2-3b-instruct"])
    upstream.rest_v1 = False
    await log_in(page)
    await page.get_by_role("link", name="LM Studio models").click()
    await page.get_by_role("button", name="Load codellama-7b").click()
    await expect(page.locator("#models-message")).to_contain_text(
        "this LM Studio is older than 0.4 (or not LM Studio). Load the model in LM Studio's app"
    )
    assert _loads(upstream) == []


async def test_upstream_down_gives_clear_errors_everywhere(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm_env.set(lmstudio_model="codellama-7b", lmstudio_max_retries=0)
    upstream.refuse()
    await log_in(page)
    lmstudio = page.locator('[data-provider="lmstudio"]')
    await expect(lmstudio.get_by_role("alert")).to_contain_text("Cannot connect to LM Studio")

    await page.get_by_role("link", name="Settings").click()
    note = page.locator("#setting-lmstudio_model-note")
    await expect(note).to_contain_text("Cannot connect to LM Studio")
    await expect(note).to_contain_text("You can still type a model name.")
    await expect(page.get_by_label("LM Studio model", exact=True)).to_have_value("codellama-7b")

    await page.get_by_role("link", name="LM Studio models").click()
    await expect(page.locator("#models-message")).to_contain_text("Cannot connect to LM Studio")

    await page.get_by_role("link", name="Try it").click()
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#stream-message")).to_contain_text("Cannot connect to LM Studio")


async def test_choosing_a_provider_without_its_key_is_refused_in_words(
    page: Page, llm_env: LLMEnv
) -> None:
    await log_in(page)
    await page.get_by_role("link", name="Settings").click()
    await page.get_by_label("Provider", exact=True).select_option("openai")
    await page.get_by_label("OpenAI model", exact=True).fill("gpt-4o-mini")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#settings-message")).to_contain_text("OPENAI_API_KEY is not set")
    await expect(page.locator("#settings-message")).to_have_class(re.compile("error"))


async def test_no_model_loaded_is_said_in_settings(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    upstream.no_models_loaded()
    await log_in(page)
    await page.get_by_role("link", name="Settings").click()
    await expect(page.locator("#setting-lmstudio_model-note")).to_contain_text(
        "has no model loaded"
    )


async def test_a_normal_user_sees_only_try_it_api_keys_and_usage(
    page: Page, llm_env: LLMEnv, make_user: UserFactory
) -> None:
    user = await make_user()
    await log_in(page, user.email, user.password)
    await expect(page.locator("#who-role")).to_have_text("user")
    tabs = page.get_by_role("navigation", name="Sections").get_by_role("link")
    await expect(tabs).to_have_text(["Try it", "API keys", "Usage"])
    await expect(page.locator("#try")).to_be_visible()
    for admin_only in ("#providers", "#settings", "#models", "#users", "#audit"):
        await page.goto(f"/admin/{admin_only}")
        await expect(page.locator(admin_only)).to_be_hidden()
        await expect(page.locator("#try")).to_be_visible()
    llm_env.set(lmstudio_model="codellama-7b")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator('[data-stat="model"]')).to_have_text("codellama-7b")


async def test_api_keys_create_copy_and_revoke(
    page: Page, llm_env: LLMEnv, client: httpx.AsyncClient
) -> None:
    await log_in(page)
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Name of a new key").fill("browser-key")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#key-value")).to_have_text(re.compile(r"^\S{20,}$"))
    key = await page.locator("#key-value").text_content()
    assert key
    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200

    row = page.locator('tr[data-key="browser-key"]').first
    await expect(row).to_contain_text("active")
    await row.get_by_role("button", name="Revoke browser-key").click()
    await expect(row).to_contain_text("revoked")
    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 401
    await page.get_by_role("link", name="Try it").click()
    await page.get_by_role("link", name="API keys").click()
    await expect(page.locator("#key-created")).to_be_hidden()  # shown once


async def test_users_create_reset_password_and_deactivate(
    page: Page, llm_env: LLMEnv, client: httpx.AsyncClient
) -> None:
    email = "page-made-user@example.com"
    await log_in(page)
    await page.get_by_role("link", name="Users").click()
    form = page.locator("#user-form")
    await form.get_by_label("Email").fill(email)
    await form.get_by_label("Password").fill("first-password")
    await form.get_by_role("button", name="Create user").click()
    await expect(page.locator("#users-message")).to_have_text(f"Created {email}.")
    row = page.locator(f'tr[data-email="{email}"]')
    await expect(row).to_contain_text("active")

    await row.get_by_role("button", name=f"Reset password of {email}").click()
    dialog = page.get_by_role("dialog", name="Reset password")
    await expect(dialog).to_contain_text(email)
    await expect(dialog.get_by_label("New password")).to_be_focused()
    await page.keyboard.type("second-password")
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#users-message")).to_have_text(f"Password of {email} reset.")
    login = await client.post(
        "/api/v1/login/access-token", data={"username": email, "password": "second-password"}
    )
    assert login.status_code == 200

    await row.get_by_role("button", name=f"Deactivate {email}").click()
    await expect(row).to_contain_text("inactive")
    login = await client.post(
        "/api/v1/login/access-token", data={"username": email, "password": "second-password"}
    )
    assert login.status_code == 400


async def test_keyboard_only_login_and_tab_navigation(page: Page, llm_env: LLMEnv) -> None:
    await page.goto("/")
    await expect(page.locator("#login-email")).to_be_focused()  # ready to type
    await page.keyboard.type("admin@example.com")
    await page.keyboard.press("Tab")
    await page.keyboard.type(ADMIN_PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("#who-email")).to_have_text("admin@example.com")
    await page.get_by_role("link", name="Try it").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#try")).to_be_visible()
    await page.get_by_role("tab", name="Stream").focus()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("tab", name="Structured")).to_be_focused()
    await expect(page.locator("#try-structured")).to_be_visible()


async def test_phone_width_has_no_sideways_scrolling(
    page: Page, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    await page.set_viewport_size(PHONE)
    await log_in(page)
    for section in ("providers", "settings", "models", "try", "keys", "users", "usage", "audit"):
        await page.goto(f"/admin/#{section}")
        await expect(page.locator(f"#{section}")).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{section} is {width} px wide"
        cut = await page.evaluate(
            "[...document.querySelectorAll('.table-wrap, .tabs')]"
            ".filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1).length"
        )
        assert cut == 0, f"{section}: a table or the tabs need sideways scrolling"
