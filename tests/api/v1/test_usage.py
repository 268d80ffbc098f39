"""The usage ledger through the real app: every call a row, and the reports over them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import col, select

from app.core.db import get_sessionmaker
from app.models import UsageEntry
from app.services.usage_ledger import usage_writer
from tests.conftest import AppUser, LLMEnv, UserFactory
from tests.upstream import StandInServer

MODEL = "llama-3.2-3b-instruct"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}


@pytest.fixture
def llm(llm_env: LLMEnv) -> LLMEnv:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=1, llm_retry_backoff=0)
    return llm_env


async def rows_of(user_id: str, *, expect: int | None = None) -> list[UsageEntry]:
    """The ledger's rows of `user_id`, written now; waits (a bounded while) for `expect`."""
    for _ in range(100):
        await usage_writer.flush()
        async with get_sessionmaker()() as session:
            result = await session.exec(
                select(UsageEntry)
                .where(UsageEntry.user_id == uuid.UUID(user_id))
                .order_by(col(UsageEntry.id))
            )
            rows = list(result.all())
        if expect is None or len(rows) >= expect:
            return rows
        await asyncio.sleep(0.05)
    return rows


async def test_each_kind_of_call_is_one_row(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, make_user: UserFactory
) -> None:
    user = await make_user()
    n = 3
    for _ in range(n):
        upstream.reply("Hello there")
        response = await client.post(
            "/api/v1/llm/generate", json={"prompt": "hi"}, headers=user.headers
        )
        assert response.status_code == 200, response.text
    for _ in range(n):  # an invalid reply first: two attempts, one call
        upstream.invalid_json(kind="prose")
        upstream.reply_json({"name": "Ada"})
        response = await client.post(
            "/api/v1/llm/structured", json={"prompt": "who", "schema": SCHEMA}, headers=user.headers
        )
        assert response.status_code == 200, response.text
    for _ in range(n):
        upstream.reply("streamed words here")
        response = await client.post(
            "/api/v1/llm/stream", json={"prompt": "hi"}, headers=user.headers
        )
        assert response.status_code == 200, response.text
    for stream in (False, True) * n:
        upstream.reply("facade answer")
        response = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": stream},
            headers=user.headers,
        )
        assert response.status_code == 200, response.text

    rows = await rows_of(user.id, expect=5 * n)
    assert [r.kind for r in rows] == ["text"] * n + ["structured"] * n + ["stream"] * n + [
        "text",
        "stream",
    ] * n
    assert {(r.provider, r.model, r.outcome, r.api_key_id) for r in rows} == {
        ("lmstudio", MODEL, "ok", None)
    }
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in rows)
    assert all(r.latency_ms > 0 and r.cost is None for r in rows)
    one_text, one_structured = rows[0], rows[n]
    # The structured call's two attempts are summed: more prompt than one plain call.
    assert one_structured.prompt_tokens > one_text.prompt_tokens


async def test_api_key_failed_and_cancelled_calls(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, make_user: UserFactory
) -> None:
    user = await make_user()
    created = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    key_headers = {"Authorization": f"Bearer {created.json()['key']}"}
    upstream.reply("with a key")
    response = await client.post("/api/v1/llm/generate", json={"prompt": "hi"}, headers=key_headers)
    assert response.status_code == 200, response.text
    upstream.fail(500, times=None)
    response = await client.post("/api/v1/llm/generate", json={"prompt": "hi"}, headers=key_headers)
    assert response.status_code == 502, response.text
    upstream.reset()

    upstream.slow_stream(n_chunks=3, interval=0.01, delay=30)  # the client leaves first
    request = asyncio.create_task(
        client.post("/api/v1/llm/stream", json={"prompt": "hi"}, headers=user.headers)
    )
    assert await asyncio.to_thread(upstream.wait_for_requests, 1, 5)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert await upstream.wait_for_disconnect_async(timeout=5)

    rows = await rows_of(user.id, expect=3)
    assert [(r.kind, r.outcome) for r in rows] == [
        ("text", "ok"),
        ("text", "llm_upstream_error"),
        ("stream", "cancelled"),
    ]
    key_id = uuid.UUID(created.json()["id"])
    assert [r.api_key_id for r in rows] == [key_id, key_id, None]
    assert rows[1].completion_tokens == 0
    assert rows[2].completion_tokens == 0


async def test_the_ledger_is_complete_under_load(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, make_user: UserFactory
) -> None:
    """N concurrent calls of every shape, then concurrent streams the clients leave: N rows."""
    user = await make_user()
    per_route = 20
    calls = [
        ("/api/v1/llm/generate", {"prompt": "hi"}, "text"),
        ("/api/v1/llm/stream", {"prompt": "hi"}, "stream"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "text"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "stream": True},
            "stream",
        ),
    ] * per_route
    responses = await asyncio.gather(
        *(client.post(path, json=body, headers=user.headers) for path, body, _ in calls)
    )
    assert [r.status_code for r in responses] == [200] * len(calls)

    left = 8
    upstream.slow_stream(n_chunks=3, interval=0.01, delay=30, times=None)
    leaving = [
        asyncio.create_task(
            client.post("/api/v1/llm/stream", json={"prompt": "hi"}, headers=user.headers)
        )
        for _ in range(left)
    ]
    assert await asyncio.to_thread(upstream.wait_for_requests, len(calls) + left, 10)
    for request in leaving:
        request.cancel()
    await asyncio.gather(*leaving, return_exceptions=True)
    assert await upstream.wait_for_disconnect_async(timeout=10, count=left)
    upstream.reset()

    rows = await rows_of(user.id, expect=len(calls) + left)
    assert len(rows) == len(calls) + left
    done, cancelled = rows[: len(calls)], rows[len(calls) :]
    assert sorted(r.kind for r in done) == sorted(kind for _, _, kind in calls)
    assert {r.outcome for r in done} == {"ok"}
    assert all(r.completion_tokens > 0 for r in done)
    assert [(r.kind, r.outcome) for r in cancelled] == [("stream", "cancelled")] * left


async def test_facade_calls_asking_for_json_are_kind_json(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, make_user: UserFactory
) -> None:
    user = await make_user()
    json_schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    formats = [{"type": "json_object"}, json_schema, {"type": "text"}, None]
    for response_format in formats:
        for stream in (False, True):
            upstream.reply_json({"name": "Oslo"})
            body: dict[str, object] = {
                "messages": [{"role": "user", "content": "a city"}],
                "stream": stream,
            }
            if response_format is not None:
                body["response_format"] = response_format
            response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
            assert response.status_code == 200, response.text
    rows = await rows_of(user.id, expect=2 * len(formats))
    assert [(r.kind, r.outcome) for r in rows] == [
        ("json", "ok"),
        ("json_stream", "ok"),
        ("json", "ok"),
        ("json_stream", "ok"),
        ("text", "ok"),
        ("stream", "ok"),
        ("text", "ok"),
        ("stream", "ok"),
    ]
    sent = [r.json.get("response_format") for r in upstream.requests[-2 * len(formats) :]]
    assert [f["type"] if f else None for f in sent] == ["json_schema"] * 4 + ["text"] * 2 + [
        None
    ] * 2


@pytest.mark.usefixtures("no_aws_credentials")
async def test_refused_calls_leave_a_row_naming_the_refusal_or_none(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, make_user: UserFactory
) -> None:
    """See the ledger's docstring: a refusal by the service or the upstream is a row whose
    outcome names it, with no tokens; a request refused while choosing its provider and
    model made no call and leaves no row."""
    user = await make_user()

    async def chat(model: str) -> httpx.Response:
        return await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=user.headers,
        )

    assert (await chat("openai/gpt-4o")).status_code == 400  # no OPENAI_API_KEY: no call
    asked = len(upstream.requests)
    assert (await chat("lmstudio/no-such-model")).status_code == 404
    assert len(upstream.requests) == asked + 1  # LM Studio is who says it does not know it
    assert (await chat("bedrock/some-model")).status_code == 400  # no AWS credentials
    rows = await rows_of(user.id, expect=2)
    assert [(r.provider, r.model, r.outcome) for r in rows] == [
        ("lmstudio", "no-such-model", "llm_model_not_found"),
        ("bedrock", "some-model", "llm_configuration_error"),
    ]
    assert all(r.prompt_tokens == r.completion_tokens == 0 for r in rows)
    report = (await _report(client, user, group_by="model")).json()
    assert report["totals"] == {
        "requests": 2,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "errors": 2,
        "cost": None,
    }


async def _report(client: httpx.AsyncClient, user: AppUser, **params: str) -> httpx.Response:
    return await client.get("/api/v1/usage", params=params, headers=user.headers)


async def test_reports_group_and_show_a_user_only_their_own(
    client: httpx.AsyncClient,
    llm: LLMEnv,
    upstream: StandInServer,
    make_user: UserFactory,
    admin_headers: dict[str, str],
) -> None:
    alice, bob = await make_user(), await make_user()
    for user, calls in ((alice, 2), (bob, 1)):
        for _ in range(calls):
            upstream.reply("hi")
            await client.post("/api/v1/llm/generate", json={"prompt": "x"}, headers=user.headers)
    upstream.fail(500, times=None)
    await client.post("/api/v1/llm/generate", json={"prompt": "x"}, headers=bob.headers)
    upstream.reset()
    await rows_of(bob.id, expect=2)
    await rows_of(alice.id, expect=2)

    mine = (await _report(client, alice, group_by="user")).json()
    assert [g["key"] for g in mine["groups"]] == [alice.id]
    assert mine["groups"][0]["requests"] == mine["totals"]["requests"] == 2
    assert mine["groups"][0]["errors"] == 0
    assert mine["groups"][0]["cost"] is None

    admin = AppUser("", "", "", admin_headers)
    everyone = (await _report(client, admin, group_by="user")).json()
    by_user = {g["key"]: g for g in everyone["groups"]}
    assert by_user[alice.id]["requests"] == 2
    assert (by_user[bob.id]["requests"], by_user[bob.id]["errors"]) == (2, 1)
    assert everyone["totals"]["requests"] >= 4

    today = datetime.now(UTC).date().isoformat()
    by_day = (await _report(client, bob, group_by="day")).json()
    assert [(g["key"], g["requests"]) for g in by_day["groups"]] == [(today, 2)]
    by_model = (await _report(client, bob, group_by="model")).json()
    assert [(g["key"], g["requests"]) for g in by_model["groups"]] == [(MODEL, 2)]
    by_provider = (await _report(client, bob, group_by="provider")).json()
    assert [g["key"] for g in by_provider["groups"]] == ["lmstudio"]
    by_key = (await _report(client, bob, group_by="api_key")).json()
    assert [(g["key"], g["requests"]) for g in by_key["groups"]] == [(None, 2)]

    later = datetime.now(UTC) + timedelta(hours=1)
    span = {"since": later.isoformat(), "until": (later + timedelta(hours=1)).isoformat()}
    empty = (await _report(client, bob, group_by="day", **span)).json()
    assert empty["groups"] == []
    assert empty["totals"] == {
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "errors": 0,
        "cost": None,
    }


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "week"},
        {"since": "yesterday"},
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    ],
)
async def test_bad_report_parameters_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, params: dict[str, str]
) -> None:
    user = await make_user()
    response = await _report(client, user, **params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"]
