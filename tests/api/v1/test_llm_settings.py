"""The LLM settings API and LM Studio model discovery, over HTTP against the stand-in."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.services.llm import get_llm_service
from tests.conftest import LLMEnv, UserFactory
from tests.upstream import DEFAULT_MODELS, StandInServer, unused_url

Headers = dict[str, str]
MODELS_URL = "/api/v1/llm-settings/lmstudio/models"


async def test_models_is_a_plain_list_of_ids(
    client: httpx.AsyncClient, llm_env: LLMEnv, make_user: UserFactory
) -> None:
    user = await make_user()
    response = await client.get(MODELS_URL, headers=user.headers)
    assert response.status_code == 200
    assert response.json() == list(DEFAULT_MODELS)


async def test_models_accepts_an_api_key(
    client: httpx.AsyncClient, llm_env: LLMEnv, make_user: UserFactory
) -> None:
    user = await make_user()
    key = (await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)).json()
    response = await client.get(MODELS_URL, headers={"Authorization": f"Bearer {key['key']}"})
    assert response.status_code == 200


async def test_models_detail_has_state_and_context(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    upstream.set_loaded(["mistral-7b-instruct"])
    body = (await client.get(f"{MODELS_URL}?detail=true", headers=admin_headers)).json()
    assert body["base_url"] == upstream.base_url
    assert body["loaded"] == ["mistral-7b-instruct"]
    assert body["message"] is None
    states = {m["id"]: m["state"] for m in body["models"]}
    assert states["mistral-7b-instruct"] == "loaded"
    assert states["codellama-7b"] == "not-loaded"
    assert all(isinstance(m["max_context_length"], int) for m in body["models"])
    assert {m["type"] for m in body["models"]} == {"llm"}


async def test_models_detail_falls_back_to_v1_without_native_api(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    with StandInServer(native_api=False, error_style="openai") as other:
        llm_env.set(lmstudio_base_url=other.base_url)
        body = (await client.get(f"{MODELS_URL}?detail=true", headers=admin_headers)).json()
    assert [m["id"] for m in body["models"]] == list(DEFAULT_MODELS)
    assert {m["state"] for m in body["models"]} == {None}


async def test_no_models_is_an_empty_list_and_the_detail_says_so(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    upstream.set_models([])
    assert (await client.get(MODELS_URL, headers=admin_headers)).json() == []
    body = (await client.get(f"{MODELS_URL}?detail=true", headers=admin_headers)).json()
    assert body["models"] == []
    assert body["message"] == (
        f"LM Studio at {upstream.base_url} has no model loaded: load a model in LM Studio "
        "(Developer tab, or `lms load <model>`) or enable just-in-time model loading"
    )


async def test_models_when_lm_studio_is_down_is_503_naming_the_url(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    url = unused_url()
    llm_env.set(lmstudio_base_url=url)
    response = await client.get(MODELS_URL, headers=admin_headers)
    assert response.status_code == 503
    assert response.json()["detail"].startswith(f"Cannot connect to LM Studio at {url}: ")
    assert response.json()["type"] == "llm_connection_error"


async def test_models_timeout_is_504(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    llm_env.set(lmstudio_timeout=1)
    upstream.delay(3, route="native_models")
    response = await client.get(MODELS_URL, headers=admin_headers)
    assert response.status_code == 504
    assert "did not answer within 1 s" in response.json()["detail"]


async def test_models_are_cached_briefly(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    for _ in range(5):
        assert (await client.get(MODELS_URL, headers=admin_headers)).status_code == 200
    listing = [r for r in upstream.requests if r.route in ("models", "native_models")]
    assert len(listing) == 1


async def test_models_needs_authentication(client: httpx.AsyncClient, llm_env: LLMEnv) -> None:
    assert (await client.get(MODELS_URL)).status_code == 401


async def test_get_reports_env_defaults_until_saved(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model="local-model", openai_api_key=None)
    body = (await client.get("/api/v1/llm-settings", headers=admin_headers)).json()
    assert body["provider"] == "lmstudio"
    assert body["model"] == "local-model"
    assert body["source"] == "environment"
    assert body["openai_api_key_set"] is False
    assert body["version"] == 0


async def test_patch_switches_model_and_takes_effect_without_restart(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    llm_env.set(lmstudio_model="local-model")
    response = await client.patch(
        "/api/v1/llm-settings",
        json={"provider": "lmstudio", "lmstudio_model": "  mistral-7b-instruct "},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["provider"], body["model"], body["source"]) == (
        "lmstudio",
        "mistral-7b-instruct",
        "database",
    )
    service = await get_llm_service()
    assert await service.get_response("hi") == "Echo: hi"
    assert upstream.chat_requests[-1].json["model"] == "mistral-7b-instruct"

    cleared = await client.patch(
        "/api/v1/llm-settings", json={"lmstudio_model": None}, headers=admin_headers
    )
    assert cleared.json()["model"] == "local-model"


async def test_switching_provider_keeps_each_providers_model(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    llm_env.set(openai_api_key="sk-test", openai_model=None, lmstudio_model=None)
    patch = await client.patch(
        "/api/v1/llm-settings",
        json={"provider": "lmstudio", "lmstudio_model": "codellama-7b"},
        headers=admin_headers,
    )
    assert patch.status_code == 200
    to_openai = await client.patch(
        "/api/v1/llm-settings",
        json={"provider": "openai", "openai_model": "gpt-4o-mini"},
        headers=admin_headers,
    )
    assert to_openai.json()["model"] == "gpt-4o-mini"
    back = await client.patch(
        "/api/v1/llm-settings", json={"provider": "lmstudio"}, headers=admin_headers
    )
    assert back.json()["model"] == "codellama-7b"
    assert back.json()["openai_model"] == "gpt-4o-mini"
    assert back.json()["version"] == 3


async def test_switching_without_a_model_is_400_naming_what_to_send(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model=None)
    response = await client.patch(
        "/api/v1/llm-settings", json={"provider": "lmstudio"}, headers=admin_headers
    )
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "LM Studio model must be provided when switching to the lmstudio provider: send "
        "`lmstudio_model`, or set LMSTUDIO_MODEL"
    )


async def test_switching_to_openai_without_a_key_is_400(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    llm_env.set(openai_api_key=None)
    response = await client.patch(
        "/api/v1/llm-settings",
        json={"provider": "openai", "openai_model": "gpt-4o-mini"},
        headers=admin_headers,
    )
    assert response.status_code == 400
    assert "OPENAI_API_KEY is not set" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "skynet"}, "provider"),
        ({"lmstudio_model": ""}, "lmstudio_model"),
        ({"lmstudio_model": "   "}, "lmstudio_model"),
        ({"lmstudio_model": "x" * 201}, "lmstudio_model"),
        ({"lmstudio_model": "bad\nname"}, "lmstudio_model"),
        ({"lmstudio_model": "bad\u0000name"}, "lmstudio_model"),
        ({"lmstudio_model": 42}, "lmstudio_model"),
        ({"lmstudio_modle": "typo"}, "lmstudio_modle"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    admin_headers: Headers,
    body: dict[str, object],
    field: str,
) -> None:
    response = await client.patch("/api/v1/llm-settings", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


async def test_post_creates_once_then_409(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    body = {"provider": "lmstudio", "lmstudio_model": "codellama-7b"}
    first = await client.post("/api/v1/llm-settings", json=body, headers=admin_headers)
    assert first.status_code == 201
    assert first.json()["version"] == 1
    second = await client.post("/api/v1/llm-settings", json=body, headers=admin_headers)
    assert second.status_code == 409


async def test_settings_are_admin_only(
    client: httpx.AsyncClient, llm_env: LLMEnv, make_user: UserFactory
) -> None:
    user = await make_user()
    body = {"provider": "lmstudio", "lmstudio_model": "codellama-7b"}
    assert (await client.get("/api/v1/llm-settings", headers=user.headers)).status_code == 403
    patch = await client.patch("/api/v1/llm-settings", json=body, headers=user.headers)
    assert patch.status_code == 403
    post = await client.post("/api/v1/llm-settings", json=body, headers=user.headers)
    assert post.status_code == 403
    assert (await client.patch("/api/v1/llm-settings", json=body)).status_code == 401


async def test_racing_posts_create_once(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    body = {"provider": "lmstudio", "lmstudio_model": "codellama-7b"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/llm-settings", json=body, headers=admin_headers) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]


async def test_racing_first_patches_all_apply_once_each(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    bodies = [{"provider": "lmstudio", "lmstudio_model": f"model-{i}"} for i in range(20)]
    responses = await asyncio.gather(
        *(client.patch("/api/v1/llm-settings", json=b, headers=admin_headers) for b in bodies)
    )
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    # Each save is one version: none lost, none counted twice.
    assert sorted(r.json()["version"] for r in responses) == list(range(1, 21))
    last = next(r.json() for r in responses if r.json()["version"] == 20)
    final = (await client.get("/api/v1/llm-settings", headers=admin_headers)).json()
    assert final["version"] == 20
    assert final["lmstudio_model"] == last["lmstudio_model"]
    assert final["source"] == "database"


async def test_patch_refused_by_validation_saves_nothing(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model=None)
    refused = await client.patch(
        "/api/v1/llm-settings", json={"provider": "lmstudio"}, headers=admin_headers
    )
    assert refused.status_code == 400, refused.text
    after = (await client.get("/api/v1/llm-settings", headers=admin_headers)).json()
    assert after["source"] == "environment"
    assert after["version"] == 0
    saved = await client.patch(
        "/api/v1/llm-settings", json={"lmstudio_model": "m"}, headers=admin_headers
    )
    assert saved.json()["version"] == 1
