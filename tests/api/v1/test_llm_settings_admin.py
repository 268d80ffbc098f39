"""The admin page's API: setting fields, provider health, LM Studio load and unload.

Over HTTP against the stand-in, which speaks LM Studio 0.4's REST API v1
(`/api/v1/models`, `/load`, `/unload`) unless told to play an older server.
"""

from __future__ import annotations

import time

import httpx
import pytest

from app.services.llm import health
from tests.conftest import LLMEnv, UserFactory
from tests.upstream import StandInServer, unused_url

Headers = dict[str, str]
HEALTH = "/api/v1/llm-settings/health"
FIELDS = "/api/v1/llm-settings/fields"
LOAD = "/api/v1/llm-settings/lmstudio/models/load"
UNLOAD = "/api/v1/llm-settings/lmstudio/models/unload"


def _rest_calls(upstream: StandInServer, path: str) -> list[object]:
    return [r.json for r in upstream.requests if r.method == "POST" and r.path == path]


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", HEALTH, None),
        ("GET", FIELDS, None),
        ("POST", LOAD, {"model": "codellama-7b"}),
        ("POST", UNLOAD, {"model": "codellama-7b"}),
    ],
)
async def test_admin_only(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    make_user: UserFactory,
    method: str,
    url: str,
    body: object,
) -> None:
    user = await make_user()
    assert (await client.request(method, url, json=body)).status_code == 401
    response = await client.request(method, url, json=body, headers=user.headers)
    assert response.status_code == 403
    assert not _rest_calls(upstream, "/api/v1/models/load")


@pytest.mark.usefixtures("no_aws_credentials")
async def test_health_reports_each_provider(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model="mistral-7b-instruct")
    body = (await client.get(HEALTH, headers=admin_headers)).json()
    by_name = {item["provider"]: item for item in body}
    lmstudio, openai = by_name["lmstudio"], by_name["openai"]
    assert lmstudio["active"]
    assert lmstudio["configured"]
    assert lmstudio["reachable"]
    assert lmstudio["model_count"] == 3
    assert lmstudio["model"] == "mistral-7b-instruct"
    assert lmstudio["latency_ms"] > 0
    assert lmstudio["key_set"] is False
    assert by_name["ollama"]["key_set"] is False  # Ollama takes no key: never "set"
    assert lmstudio["error"] is None
    assert openai["configured"] is False
    assert openai["reachable"] is None
    assert "OPENAI_API_KEY" in openai["error"]
    assert {p: (by_name[p]["local"], by_name[p]["needs_key"]) for p in by_name} == {
        "lmstudio": (True, False),
        "openai": (False, True),
        "openrouter": (False, True),
        "ollama": (True, False),
        "bedrock": (False, True),
    }
    assert by_name["bedrock"]["configured"] is False  # no credentials: not "unreachable"
    assert by_name["bedrock"]["reachable"] is None
    assert "No AWS credentials were found" in by_name["bedrock"]["error"]


async def test_health_with_a_key_set_reports_it_without_showing_it(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    secret = "sk-test-secret-value-0123456789"
    llm_env.set(openai_api_key=secret, openai_base_url=unused_url())
    response = await client.get(f"{HEALTH}?provider=openai", headers=admin_headers)
    [openai] = response.json()
    assert openai["configured"]
    assert openai["key_set"]
    assert openai["reachable"] is False
    assert "Cannot connect to OpenAI" in openai["error"]
    assert secret not in response.text


async def test_health_names_the_cause_when_lmstudio_is_down(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    upstream.refuse()
    [lmstudio] = (await client.get(f"{HEALTH}?provider=lmstudio", headers=admin_headers)).json()
    assert lmstudio["reachable"] is False
    assert lmstudio["latency_ms"] is None
    assert "Cannot connect to LM Studio" in lmstudio["error"]


async def test_health_is_bounded_in_time(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "HEALTH_TIMEOUT", 0.5)
    upstream.delay(5, route="native_models", times=None)
    started = time.perf_counter()
    [lmstudio] = (await client.get(f"{HEALTH}?provider=lmstudio", headers=admin_headers)).json()
    assert time.perf_counter() - started < 2
    assert lmstudio["reachable"] is False
    assert "did not list its models within 0.5 s" in lmstudio["error"]


async def test_health_rejects_an_unknown_provider(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    response = await client.get(f"{HEALTH}?provider=bogus", headers=admin_headers)
    assert response.status_code == 422


async def test_fields_say_where_each_value_comes_from(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    llm_env.set(openai_model="gpt-4o-mini")
    fields = {f["name"]: f for f in (await client.get(FIELDS, headers=admin_headers)).json()}
    assert fields["provider"]["source"] == "environment"
    assert [c["value"] for c in fields["provider"]["choices"]] == [
        "lmstudio",
        "openai",
        "openrouter",
        "ollama",
        "bedrock",
    ]
    assert fields["openai_model"] == {
        "name": "openai_model",
        "label": "OpenAI model",
        "kind": "model",
        "value": "gpt-4o-mini",
        "source": "environment",
        "env": "OPENAI_MODEL",
        "provider": "openai",
        "choices": None,
        "discovery": "/api/v1/llm-settings/openai/models?detail=true",
        "pick": "type",
    }
    assert fields["lmstudio_model"]["source"] == "unset"
    assert fields["lmstudio_model"]["discovery"].endswith("/lmstudio/models?detail=true")
    assert fields["lmstudio_model"]["pick"] == "list"
    assert fields["fallback_providers"]["source"] == "unset"
    assert fields["fallback_providers"]["value"] is None

    saved = await client.patch(
        "/api/v1/llm-settings", json={"lmstudio_model": "codellama-7b"}, headers=admin_headers
    )
    assert saved.status_code == 200, saved.text
    fields = {f["name"]: f for f in (await client.get(FIELDS, headers=admin_headers)).json()}
    assert fields["provider"]["source"] == "database"
    assert fields["lmstudio_model"]["source"] == "database"
    assert fields["lmstudio_model"]["value"] == "codellama-7b"
    assert fields["openai_model"]["source"] == "environment"


async def test_the_fallback_field_says_where_the_chain_comes_from(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    llm_env.set(
        lmstudio_model="codellama-7b", ollama_model="llama3.2", llm_fallback_providers=["ollama"]
    )

    async def field() -> tuple[str, str | None]:
        fields = (await client.get(FIELDS, headers=admin_headers)).json()
        [chain] = [f for f in fields if f["name"] == "fallback_providers"]
        assert (chain["kind"], chain["env"]) == ("fallback", "LLM_FALLBACK_PROVIDERS")
        return chain["source"], chain["value"]

    assert await field() == ("environment", "ollama")
    saved = await client.patch(
        "/api/v1/llm-settings",
        json={"fallback_providers": ["ollama"]},
        headers=admin_headers,
    )
    assert saved.status_code == 200, saved.text
    assert await field() == ("database", "ollama")


async def test_load_loads_an_unloaded_model_with_context_and_ttl(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    upstream.set_loaded(["llama-3.2-3b-instruct"])
    response = await client.post(
        LOAD,
        json={"model": "codellama-7b", "context_length": 8192, "ttl": 600},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "loaded"
    assert response.json()["instance_ids"] == ["codellama-7b"]
    assert _rest_calls(upstream, "/api/v1/models/load") == [
        {"model": "codellama-7b", "context_length": 8192, "ttl": 600}
    ]
    detail = (
        await client.get("/api/v1/llm-settings/lmstudio/models?detail=true", headers=admin_headers)
    ).json()
    assert "codellama-7b" in detail["loaded"]  # the discovery cache was dropped


async def test_load_of_a_loaded_model_starts_no_second_instance(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    response = await client.post(LOAD, json={"model": "codellama-7b"}, headers=admin_headers)
    assert response.status_code == 200
    assert response.json()["status"] == "already-loaded"
    assert _rest_calls(upstream, "/api/v1/models/load") == []


async def test_unload_unloads_every_instance(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    upstream_root = upstream.root_url
    async with httpx.AsyncClient() as direct:  # a second instance, as another client could
        await direct.post(f"{upstream_root}/api/v1/models/load", json={"model": "codellama-7b"})
    response = await client.post(UNLOAD, json={"model": "codellama-7b"}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model": "codellama-7b",
        "status": "unloaded",
        "instance_ids": ["codellama-7b", "codellama-7b:2"],
    }
    again = await client.post(UNLOAD, json={"model": "codellama-7b"}, headers=admin_headers)
    assert again.json()["status"] == "not-loaded"


@pytest.mark.parametrize("url", [LOAD, UNLOAD])
async def test_unknown_model_is_a_404_naming_what_is_there(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers, url: str
) -> None:
    response = await client.post(url, json={"model": "no-such-model"}, headers=admin_headers)
    assert response.status_code == 404
    assert "'no-such-model' is not downloaded" in response.json()["detail"]
    assert "codellama-7b" in response.json()["detail"]


@pytest.mark.parametrize("url", [LOAD, UNLOAD])
async def test_lmstudio_older_than_0_4_is_named(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    url: str,
) -> None:
    upstream.rest_v1 = False
    response = await client.post(url, json={"model": "codellama-7b"}, headers=admin_headers)
    assert response.status_code == 502
    assert response.json()["type"] == "lmstudio_too_old"
    assert "older than 0.4" in response.json()["detail"]
    assert "Load the model in LM Studio's app" in response.json()["detail"]


async def test_an_openai_style_server_404_is_named_too_old(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    with StandInServer(error_style="openai", native_api=False) as other:
        llm_env.set(lmstudio_base_url=other.base_url)
        response = await client.post(LOAD, json={"model": "x"}, headers=admin_headers)
    assert response.status_code == 502
    assert response.json()["type"] == "lmstudio_too_old"


async def test_load_with_lmstudio_down_is_a_503(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    upstream.refuse()
    response = await client.post(LOAD, json={"model": "codellama-7b"}, headers=admin_headers)
    assert response.status_code == 503
    assert "Cannot connect to LM Studio" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"model": ""},
        {"model": "a\r\nb"},
        {"model": "x" * 201},
        {"model": "codellama-7b", "context_length": 10},
        {"model": "codellama-7b", "context_length": 10**9},
        {"model": "codellama-7b", "ttl": 5},
        {"model": "codellama-7b", "ttl": 10**9},
        {"model": "codellama-7b", "gpu": "max"},
    ],
)
async def test_load_input_is_validated(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    body: dict[str, object],
) -> None:
    upstream.set_loaded([])
    response = await client.post(LOAD, json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert _rest_calls(upstream, "/api/v1/models/load") == []
