"""The admin page's Usage and Audit views in a real browser: real calls through the app and
the stand-in LM Studio leave ledger rows, and the page shows them, grouped, with totals;
the audit trail a page at a time. SQLite only (the page does not depend on the backend).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from app.services.llm.ledger import Caller, CallRecord
from app.services.usage_ledger import usage_writer
from tests.conftest import AppUser, LLMEnv, UserFactory
from tests.upstream import StandInServer
from tests.web.conftest import PHONE, log_in

pytestmark = pytest.mark.parametrize("scratch_databases", ["sqlite"], indirect=True)

MODEL = "llama-3.2-3b-instruct"


@pytest.fixture
def llm(llm_env: LLMEnv) -> LLMEnv:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=0, llm_retry_backoff=0)
    return llm_env


async def generate(
    client: httpx.AsyncClient, upstream: StandInServer, headers: dict[str, str], *, ok: bool = True
) -> None:
    """One call through the app to the stand-in: answered, or failed upstream (502)."""
    if ok:
        upstream.reply("Hello from the stand-in")
    else:
        upstream.fail(500)
    response = await client.post("/api/v1/llm/generate", json={"prompt": "hi"}, headers=headers)
    assert response.status_code == (200 if ok else 502), response.text


async def calls_of_a_new_user(
    client: httpx.AsyncClient, upstream: StandInServer, make_user: UserFactory
) -> tuple[AppUser, str]:
    """A user who made 3 calls with their login (one failed) and 2 with an API key; the
    key's id. The ledger is written before this returns."""
    user = await make_user()
    created = await client.post("/api/v1/api-keys", json={"name": "laptop"}, headers=user.headers)
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    for headers, ok in ((user.headers, True),) * 2 + ((user.headers, False),) + ((key, True),) * 2:
        await generate(client, upstream, headers, ok=ok)
    await usage_writer.flush()
    return user, created.json()["id"]


async def open_usage(page: Page, user: AppUser | None = None) -> None:
    if user is None:
        await log_in(page)
    else:
        await log_in(page, user.email, user.password)
    await page.get_by_role("link", name="Usage").click()
    await expect(page.locator("#usage-status")).not_to_be_empty()


def cells(row: Locator) -> Locator:
    return row.locator("th, td")


async def test_a_user_sees_their_calls_by_day_model_and_key_with_totals(
    page: Page,
    llm: LLMEnv,
    client: httpx.AsyncClient,
    upstream: StandInServer,
    make_user: UserFactory,
) -> None:
    user, key_id = await calls_of_a_new_user(client, upstream, make_user)
    await open_usage(page, user)
    await expect(page.locator("#usage-scope")).to_have_text(
        "Your LLM calls: requests, tokens, errors and cost."
    )
    await expect(
        page.get_by_role("table", name=re.compile("^LLM calls from .* by day"))
    ).to_be_visible()
    table = page.locator("#usage-table")
    await expect(table.get_by_role("columnheader")).to_have_text(
        ["Day (UTC)", "Requests", "Prompt tokens", "Completion tokens", "Errors", "Cost"],
        use_inner_text=True,
    )
    today = datetime.now(UTC).date().isoformat()
    rows = table.locator("tbody tr")
    await expect(rows).to_have_count(1)
    number = re.compile(r"^[1-9][\d,]*$")
    await expect(cells(rows.first)).to_have_text([today, "5", number, number, "1", "unknown"])
    total = table.locator("tfoot tr")
    await expect(cells(total)).to_have_text(["Total", "5", number, number, "1", "unknown"])

    await page.get_by_label("Group by").select_option("model")
    await expect(table.locator("thead th").first).to_have_text("Model")
    await expect(table).to_have_accessible_name(re.compile("by model$"))
    await expect(cells(rows.first)).to_have_text([MODEL, "5", number, number, "1", "unknown"])

    await page.get_by_label("Group by").select_option("api_key")
    await expect(rows).to_have_count(2)
    by_key = page.locator(f'#usage-table tbody tr[data-key="{key_id}"]')
    await expect(cells(by_key).nth(0)).to_have_text(re.compile(r"^laptop \(lmb_\S+…\)$"))
    await expect(cells(by_key).nth(1)).to_have_text("2")
    session_row = page.locator('#usage-table tbody tr[data-key=""]')
    await expect(cells(session_row).nth(0)).to_have_text("no key (logged-in session)")
    await expect(cells(session_row).nth(1)).to_have_text("3")
    await expect(cells(session_row).nth(4)).to_have_text("1")

    # The grouping the API would show anyone else is theirs alone.
    await page.get_by_label("Group by").select_option("user")
    await expect(rows).to_have_count(1)
    await expect(cells(rows.first).first).to_have_text(user.email)


async def test_an_admin_sees_every_user_by_email_and_new_calls_on_refresh(
    page: Page,
    llm: LLMEnv,
    client: httpx.AsyncClient,
    upstream: StandInServer,
    make_user: UserFactory,
) -> None:
    user, _ = await calls_of_a_new_user(client, upstream, make_user)
    await open_usage(page)
    await expect(page.locator("#usage-scope")).to_contain_text("LLM calls of every user")
    await page.get_by_label("Group by").select_option("user")
    row = page.locator(f'#usage-table tbody tr[data-key="{user.id}"]')
    await expect(cells(row).nth(0)).to_have_text(user.email)
    await expect(cells(row).nth(1)).to_have_text("5")

    await generate(client, upstream, user.headers)
    await usage_writer.flush()
    await page.get_by_role("button", name="Refresh").click()
    await expect(cells(row).nth(1)).to_have_text("6")


async def test_an_empty_range_says_so_in_words_and_keyboard_submits(
    page: Page, llm: LLMEnv, make_user: UserFactory
) -> None:
    user = await make_user()
    await open_usage(page, user)
    today = datetime.now(UTC).date().isoformat()
    await expect(page.locator("#usage-table tbody")).to_have_text(
        re.compile(rf"^No LLM calls from \d{{4}}-\d\d-\d\d to {today} \(UTC\)\.$")
    )
    await expect(page.locator("#usage-table tfoot")).to_be_hidden()

    await page.get_by_label("From (UTC)").fill("2026-01-05")
    await page.get_by_label("To (UTC, included)").fill("2026-01-05")
    await page.get_by_label("To (UTC, included)").focus()
    await page.keyboard.press("Enter")  # submits the form, as in any text field
    await expect(page.locator("#usage-table tbody")).to_have_text(
        "No LLM calls on 2026-01-05 (UTC)."
    )
    await expect(page.locator("#usage-status")).to_have_text("0 calls on 2026-01-05.")


async def test_bad_ranges_are_said_in_words(
    page: Page, llm: LLMEnv, make_user: UserFactory
) -> None:
    user = await make_user()
    await open_usage(page, user)
    message = page.locator("#usage-message")
    await page.get_by_label("From (UTC)").fill("2026-03-02")
    await page.get_by_label("To (UTC, included)").fill("2026-03-01")
    await page.get_by_role("button", name="Show").click()
    await expect(message).to_have_text("The start date must not be after the end date.")
    await expect(message).to_have_class(re.compile("error"))

    await page.get_by_label("From (UTC)").fill("2024-01-01")
    await page.get_by_role("button", name="Show").click()
    await expect(message).to_have_text(
        "Could not load usage: query.since: the range may span at most 366 days"
    )

    await page.get_by_label("From (UTC)").fill("2026-02-01")
    await page.get_by_role("button", name="Show").click()
    await expect(message).to_be_hidden()
    await expect(page.locator("#usage-table tbody")).to_contain_text(
        "No LLM calls from 2026-02-01 to 2026-03-01"
    )


async def test_audit_is_paged_newest_first_and_admin_only(
    page: Page,
    llm_env: LLMEnv,
    client: httpx.AsyncClient,
    make_user: UserFactory,
    admin_headers: dict[str, str],
) -> None:
    created = []
    for n in range(55):
        response = await client.post(
            "/api/v1/api-keys", json={"name": f"audit-{n}"}, headers=admin_headers
        )
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
    revoked = await client.delete(f"/api/v1/api-keys/{created[-1]}", headers=admin_headers)
    assert revoked.status_code == 204, revoked.text

    await log_in(page)
    await page.get_by_role("link", name="Audit").click()
    rows = page.locator("#audit-table tbody tr")
    await expect(rows).to_have_count(50)
    newest = rows.first
    await expect(newest.locator("td").nth(1)).to_have_text("admin@example.com")
    await expect(newest.locator(".what")).to_have_text(f"revoked API key {created[-1]}")
    await expect(newest.locator(".changes li")).to_have_text(
        re.compile(r"^revoked_at: none → \d{4}-\d\d-\d\dT")
    )
    await expect(rows.nth(1).locator(".what")).to_have_text(f"created API key {created[-1]}")
    range_text = page.locator("#audit-range")
    await expect(range_text).to_have_text(re.compile(r"^1\u201350 of [\d,]+$"))
    newer, older = (page.get_by_role("button", name=n) for n in ("Newer", "Older"))
    await expect(newer).to_be_disabled()

    await older.focus()
    await page.keyboard.press("Enter")
    await expect(range_text).to_have_text(re.compile(r"^51\u2013\d+ of [\d,]+$"))
    await expect(rows.first.locator(".what")).to_have_text(f"created API key {created[-50]}")
    await expect(rows.first.locator(".changes li").first).to_have_text("name: audit-5")
    await expect(newer).to_be_enabled()
    await newer.click()
    await expect(range_text).to_have_text(re.compile(r"^1\u201350 of"))

    user = await make_user()
    await page.get_by_role("button", name="Log out").click()
    await log_in(page, user.email, user.password)
    await expect(page.get_by_role("link", name="Audit")).to_be_hidden()
    await page.goto("/admin/#audit")
    await expect(page.locator("#audit")).to_be_hidden()


async def test_usage_and_audit_fit_a_phone(
    page: Page,
    llm: LLMEnv,
    client: httpx.AsyncClient,
    upstream: StandInServer,
    make_user: UserFactory,
) -> None:
    await calls_of_a_new_user(client, upstream, make_user)
    await page.set_viewport_size(PHONE)
    await open_usage(page)
    for group in ("day", "user", "api_key", "model"):
        await page.get_by_label("Group by").select_option(group)
        await expect(page.locator("#usage-table tfoot")).to_be_visible()
        await check_fits(page, f"usage by {group}")
    await page.goto("/admin/#audit")
    await expect(page.locator("#audit-table tbody tr").first).to_be_visible()
    await check_fits(page, "audit")


async def test_big_numbers_and_a_reported_cost_fit_a_phone(
    page: Page, llm: LLMEnv, make_user: UserFactory
) -> None:
    user = await make_user()
    for n in range(3):  # what a heavy month of a paid model leaves
        record = CallRecord("text", caller=Caller(uuid.UUID(user.id)))
        record.served("openrouter", f"anthropic/claude-3.5-sonnet-{n}", None)
        record.prompt_tokens, record.completion_tokens = 98_765_432, 12_345_678
        record.cost = 1234.567891
        record.finish(None)
    await usage_writer.flush()
    await page.set_viewport_size(PHONE)
    await open_usage(page, user)
    total = page.locator("#usage-table tfoot tr")
    await expect(cells(total)).to_have_text(
        ["Total", "3", "296,296,296", "37,037,034", "0", "$3,703.70"]
    )
    heads = {"day": "Day (UTC)", "model": "Model", "provider": "Provider", "api_key": "API key"}
    for group, head in heads.items():
        await page.get_by_label("Group by").select_option(group)
        await expect(page.locator("#usage-key-head")).to_have_text(head)
        await check_fits(page, f"usage by {group}")


async def check_fits(page: Page, what: str) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{what} is {width} px wide"
    cut = await page.evaluate(
        "[...document.querySelectorAll('.table-wrap')]"
        ".filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1).length"
    )
    assert cut == 0, f"{what}: a table needs sideways scrolling"
