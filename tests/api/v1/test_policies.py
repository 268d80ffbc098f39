"""Per-key and per-user policies over HTTP: set by an admin, enforced on every LLM route."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import AppUser, LLMEnv, UserFactory
from tests.upstream import StandInServer

Headers = dict[str, str]
LOCAL = "llama-3.2-3b-instruct"
ASK = {"prompt": "hello"}
CHAT = {"model": f"lmstudio/{LOCAL}", "messages": [{"role": "user", "content": "hi"}]}
SCHEMA = {"type": "object", "properties": {}}
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["database", "redis"])
def store(request: pytest.FixtureRequest, llm_env: LLMEnv) -> str:
    """Where the policy counters live: the database (default) or Redis (`REDIS_URL`)."""
    if request.param == "redis":
        llm_env.set(redis_url=REDIS_URL)
    return str(request.param)


async def _key(client: httpx.AsyncClient, user: AppUser, name: str = "ci-bot") -> dict[str, Any]:
    made = await client.post("/api/v1/api-keys", json={"name": name}, headers=user.headers)
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def _bearer(key: dict[str, Any]) -> Headers:
    return {"Authorization": f"Bearer {key['key']}"}


async def _set_key_policy(
    client: httpx.AsyncClient, admin: Headers, key: dict[str, Any], policy: dict[str, Any] | None
) -> httpx.Response:
    return await client.patch(
        f"/api/v1/api-keys/{key['id']}", json={"policy": policy}, headers=admin
    )


async def test_admin_sets_reads_and_clears_a_key_and_a_user_policy_audited(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: Headers
) -> None:
    user = await make_user()
    key = await _key(client, user)
    policy = {"allowed_models": ["lmstudio/*", "gpt-4o"], "requests_per_minute": 60}
    saved = await _set_key_policy(client, admin_headers, key, policy)
    assert saved.status_code == 200, saved.text
    full = {**policy, "tokens_per_minute": None, "tokens_per_day": None}
    assert saved.json()["policy"] == {**full, "max_concurrent_streams": None}
    user_policy = {"allowed_models": [f"lmstudio/{LOCAL}"], "requests_per_minute": 10}
    patched = await client.patch(
        f"/api/v1/users/{user.id}", json={"policy": user_policy}, headers=admin_headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["policy"]["requests_per_minute"] == 10
    read = await client.get(f"/api/v1/api-keys/{key['id']}", headers=user.headers)
    assert read.status_code == 200, read.text
    effective = read.json()["effective_policy"]
    assert effective["allowed_models"] == [f"lmstudio/{LOCAL}"]
    assert effective["requests_per_minute"] == 10
    assert read.json()["policy"]["requests_per_minute"] == 60
    user_read = await client.get(f"/api/v1/users/{user.id}", headers=admin_headers)
    assert user_read.json()["policy"]["allowed_models"] == [f"lmstudio/{LOCAL}"]
    audit = await client.get("/api/v1/audit?action=api_key.policy", headers=admin_headers)
    assert audit.status_code == 200, audit.text
    assert any(e["target_id"] == key["id"] for e in audit.json()["data"])
    cleared = await _set_key_policy(client, admin_headers, key, None)
    assert cleared.status_code == 200
    assert cleared.json()["policy"] is None


@pytest.mark.parametrize(
    "policy",
    [
        {"allowed_models": ["m"] * 10_000},
        {"allowed_models": ["a\r\nb"]},
        {"allowed_models": ["a\x00b"]},
        {"allowed_models": ["x" * 201]},
        {"allowed_models": ["*"]},
        {"allowed_models": "lmstudio/x"},
        {"requests_per_minute": -1},
        {"requests_per_minute": 0},
        {"requests_per_minute": "60"},
        {"tokens_per_day": 10**12},
        {"max_concurrent_streams": 1.5},
        {"unknown_limit": 1},
    ],
)
async def test_hostile_policies_are_422(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    admin_headers: Headers,
    policy: dict[str, Any],
) -> None:
    user = await make_user()
    key = await _key(client, user)
    response = await _set_key_policy(client, admin_headers, key, policy)
    assert response.status_code == 422, response.text
    assert "policy" in str(response.json()["detail"][0]["loc"])
    as_user = await client.patch(
        f"/api/v1/users/{user.id}", json={"policy": policy}, headers=admin_headers
    )
    assert as_user.status_code == 422, as_user.text


async def test_only_admins_set_policies(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    key = await _key(client, user)
    response = await _set_key_policy(client, user.headers, key, {"requests_per_minute": 1000})
    assert response.status_code == 403
    other = await make_user()
    assert (
        await client.get(f"/api/v1/api-keys/{key['id']}", headers=other.headers)
    ).status_code == 404


@pytest.mark.usefixtures("llm_env")
async def test_a_forbidden_model_is_403_on_every_route_and_hidden_from_v1_models(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: Headers
) -> None:
    user = await make_user()
    key = await _key(client, user)
    headers = _bearer(key)
    saved = await _set_key_policy(client, admin_headers, key, {"allowed_models": ["openai/*"]})
    assert saved.status_code == 200
    calls = [
        ("/api/v1/llm/generate", {**ASK, "provider": "lmstudio", "model": LOCAL}),
        ("/api/v1/llm/stream", {**ASK, "provider": "lmstudio", "model": LOCAL}),
        (
            "/api/v1/llm/structured",
            {**ASK, "provider": "lmstudio", "model": LOCAL, "schema": SCHEMA},
        ),
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", {**CHAT, "stream": True}),
    ]
    for path, body in calls:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 403, (path, response.text)
        text = response.text
        assert "API key 'ci-bot'" in text
        assert f"lmstudio/{LOCAL}" in text
        assert "openai/*" in text
    assert "error" in response.json()  # the facade's OpenAI shape
    models = await client.get("/v1/models", headers=headers)
    ids = [m["id"] for m in models.json()["data"]]
    assert ids == [], ids  # no OpenAI model is configured here
    await _set_key_policy(client, admin_headers, key, {"allowed_models": [LOCAL]})
    models = await client.get("/v1/models", headers=headers)
    ids = [m["id"] for m in models.json()["data"]]
    assert f"lmstudio/{LOCAL}" in ids, ids
    assert set(ids) <= {"default", f"lmstudio/{LOCAL}"}, ids
    # The user's own JWT is not bound by the key's policy.
    assert (
        await client.post("/v1/chat/completions", json=CHAT, headers=user.headers)
    ).status_code == 200
    # A user policy binds every key of theirs, however wide the key's own.
    await _set_key_policy(client, admin_headers, key, None)
    await client.patch(
        f"/api/v1/users/{user.id}",
        json={"policy": {"allowed_models": ["nope"]}},
        headers=admin_headers,
    )
    refused = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert refused.status_code == 403
    many = {"allowed_models": [f"model-{i:03}" for i in range(200)]}
    await _set_key_policy(client, admin_headers, key, many)
    long_list = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert long_list.status_code == 403
    assert "model-009, and 190 more" in long_list.text
    assert f"user '{user.email}'" in refused.text


@pytest.mark.usefixtures("store")
async def test_requests_per_minute_is_429_with_retry_after_naming_the_limit(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: Headers
) -> None:
    user = await make_user()
    key = await _key(client, user)
    await _set_key_policy(client, admin_headers, key, {"requests_per_minute": 3})
    headers = _bearer(key)
    statuses = [
        (await client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    generate = {**ASK, "provider": "lmstudio", "model": LOCAL}
    for path, body in (("/v1/chat/completions", CHAT), ("/api/v1/llm/generate", generate)):
        refused = await client.post(path, json=body, headers=headers)
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "requests_per_minute of API key 'ci-bot' (3) reached" in refused.text
    # Another key of the same user has its own count.
    other = await _key(client, user, "other")
    assert (
        await client.post("/v1/chat/completions", json=CHAT, headers=_bearer(other))
    ).status_code == 200


@pytest.mark.usefixtures("store")
async def test_tokens_per_minute_admits_a_call_under_the_limit_then_refuses(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: Headers
) -> None:
    user = await make_user()
    patched = await client.patch(
        f"/api/v1/users/{user.id}", json={"policy": {"tokens_per_minute": 3}}, headers=admin_headers
    )
    assert patched.status_code == 200
    headers = user.headers  # a JWT: the user's policy binds it too
    first = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert first.status_code == 200, first.text
    spent = first.json()["usage"]["total_tokens"]
    assert spent > 3  # admitted under the limit; overshoots by at most its own size
    second = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert second.status_code == 429, second.text
    assert f"tokens_per_minute of user '{user.email}' (3) reached" in second.text


@pytest.mark.usefixtures("store")
async def test_concurrent_streams_are_limited_and_a_cancelled_stream_frees_its_lease(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    admin_headers: Headers,
    upstream: StandInServer,
) -> None:
    user = await make_user()
    key = await _key(client, user)
    await _set_key_policy(client, admin_headers, key, {"max_concurrent_streams": 1})
    headers = _bearer(key)
    body = {**CHAT, "stream": True}
    upstream.slow_stream(n_chunks=40, interval=0.05, times=None)
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as first:
        assert first.status_code == 200
        async for _ in first.aiter_lines():
            break
        second = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert second.status_code == 429, second.text
        assert "max_concurrent_streams of API key 'ci-bot' (1) reached" in second.text
        assert second.headers["retry-after"] == "1"
    # The client went away mid-stream: its lease is given back.
    for _ in range(50):
        again = await client.post("/v1/chat/completions", json=body, headers=headers)
        if again.status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert again.status_code == 200, again.text


@pytest.mark.usefixtures("llm_env")
async def test_fallback_never_reaches_a_provider_the_key_may_not_call(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    admin_headers: Headers,
    upstream: StandInServer,
    llm_env: LLMEnv,
) -> None:
    with StandInServer(
        error_style="openai", api_key="sk-test-0123456789", models=["gpt-4o-mini"]
    ) as cloud:
        llm_env.set(
            lmstudio_model=LOCAL,
            lmstudio_max_retries=0,
            openai_api_key="sk-test-0123456789",
            openai_base_url=cloud.base_url,
            openai_model="gpt-4o-mini",
            openai_max_retries=0,
        )
        chain = [{"provider": "openai", "allow_cloud": True}]
        saved = await client.patch(
            "/api/v1/llm-settings",
            json={"provider": "lmstudio", "fallback_providers": chain},
            headers=admin_headers,
        )
        assert saved.status_code == 200, saved.text
        user = await make_user()
        key = await _key(client, user)
        await _set_key_policy(client, admin_headers, key, {"allowed_models": [f"lmstudio/{LOCAL}"]})
        upstream.fail(503)
        refused = await client.post("/api/v1/llm/generate", json=ASK, headers=_bearer(key))
        assert refused.status_code == 502, refused.text  # LM Studio's failure, no fallback
        assert cloud.chat_requests == []
        # Only the fallback allowed: the chain skips LM Studio and never calls it.
        await _set_key_policy(client, admin_headers, key, {"allowed_models": ["openai/*"]})
        before = len(upstream.chat_requests)
        served = await client.post("/api/v1/llm/generate", json=ASK, headers=_bearer(key))
        assert served.status_code == 200, served.text
        assert served.json()["provider"] == "openai"
        assert len(upstream.chat_requests) == before


async def test_an_unreachable_redis_refuses_limited_calls_with_503_and_spares_the_others(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: Headers, llm_env: LLMEnv
) -> None:
    llm_env.set(redis_url="redis://:hunter2@127.0.0.1:9/0")
    user = await make_user()
    key = await _key(client, user)
    await _set_key_policy(client, admin_headers, key, {"requests_per_minute": 10})
    refused = await client.post("/v1/chat/completions", json=CHAT, headers=_bearer(key))
    assert refused.status_code == 503, refused.text
    assert "Policy limits cannot be checked: Redis at 127.0.0.1:9" in refused.text
    assert "hunter2" not in refused.text
    unlimited = await client.post("/v1/chat/completions", json=CHAT, headers=user.headers)
    assert unlimited.status_code == 200, unlimited.text


async def test_embeddings_are_held_to_the_allow_list_and_the_request_limit(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    admin_headers: Headers,
    llm_env: LLMEnv,
    upstream: StandInServer,
) -> None:
    embedder = "text-embedding-nomic-embed-text-v1.5"
    upstream.set_models([LOCAL, embedder])
    llm_env.set(lmstudio_model=LOCAL, lmstudio_embedding_model=embedder)
    user = await make_user()
    key = await _key(client, user)
    body = {"model": "default", "input": ["a", "b"], "encoding_format": "float"}
    await _set_key_policy(client, admin_headers, key, {"allowed_models": [f"lmstudio/{LOCAL}"]})
    refused = await client.post("/v1/embeddings", json=body, headers=_bearer(key))
    assert refused.status_code == 403, refused.text
    assert f"lmstudio/{embedder}" in refused.text
    assert upstream.embeddings_requests == []
    policy = {"allowed_models": ["lmstudio/*"], "requests_per_minute": 1}
    await _set_key_policy(client, admin_headers, key, policy)
    served = await client.post("/v1/embeddings", json=body, headers=_bearer(key))
    assert served.status_code == 200, served.text
    limited = await client.post("/v1/embeddings", json=body, headers=_bearer(key))
    assert limited.status_code == 429, limited.text
    assert "retry-after" in limited.headers
