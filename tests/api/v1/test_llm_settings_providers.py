"""Settings for every provider: the new model fields, warnings about model names, the
fallback chain and its rules, and model discovery for each provider; over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.core.config import LLMProvider
from app.services.llm import PROVIDERS, FallbackEntry, load_effective_settings
from app.services.llm import model_names as model_names_module
from tests.conftest import LLMEnv, UserFactory
from tests.upstream import DEFAULT_MODELS, StandInServer, unused_url
from tests.upstream.ollama_server import OllamaStandIn
from tests.upstream.openrouter_server import OpenRouterStandIn

Headers = dict[str, str]
SETTINGS = "/api/v1/llm-settings"
KEY = "sk-test-0123456789"
MODEL = "llama-3.2-3b-instruct"
NEW_FIELDS = ("openrouter_model", "ollama_model", "bedrock_model")


@pytest.fixture(scope="module")
def openai_upstream() -> Iterator[StandInServer]:
    """A stand-in speaking like api.openai.com, with a key."""
    with StandInServer(
        error_style="openai", api_key=KEY, models=["gpt-4o-mini", "acme/gpt-nested"]
    ) as server:
        yield server


@dataclass
class OpenAIEnv:
    """LM Studio (the stand-in) active with a model; OpenAI usable, through its stand-in."""

    llm_env: LLMEnv
    values: dict[str, object]

    def set(self, **changes: object) -> None:
        """These env settings on top of the ones above."""
        self.llm_env.set(**{**self.values, **changes})


@pytest.fixture
def openai_env(llm_env: LLMEnv, openai_upstream: StandInServer) -> OpenAIEnv:
    openai_upstream.reset()
    values = {
        "lmstudio_model": MODEL,
        "openai_api_key": KEY,
        "openai_base_url": openai_upstream.base_url,
        "openai_model": "gpt-4o-mini",
    }
    env = OpenAIEnv(llm_env, values)
    env.set()
    return env


async def patch(client: httpx.AsyncClient, headers: Headers, **body: Any) -> httpx.Response:
    return await client.patch(SETTINGS, json=body, headers=headers)


# ── the new model fields ─────────────────────────────────────────────────────


@pytest.mark.parametrize("field", NEW_FIELDS)
async def test_patch_saves_each_new_model_field(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers, field: str
) -> None:
    llm_env.set(lmstudio_model=MODEL)
    response = await patch(client, admin_headers, **{field: "  some/model:7b "})
    assert response.status_code == 200, response.text
    assert response.json()[field] == "some/model:7b"
    shown = (await client.get(SETTINGS, headers=admin_headers)).json()
    assert (shown[field], shown["source"]) == ("some/model:7b", "database")
    provider = LLMProvider(field.removesuffix("_model"))
    assert (await load_effective_settings()).model_for(provider) == "some/model:7b"

    for bad in ("", "x" * 201, "bad\nname"):
        refused = await patch(client, admin_headers, **{field: bad})
        assert refused.status_code == 422, bad
        assert refused.json()["detail"][0]["loc"][-1] == field


async def test_post_takes_the_new_fields_and_a_fallback_chain(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    body = {
        "provider": "lmstudio",
        "lmstudio_model": MODEL,
        "ollama_model": "llama3.2",
        "fallback_providers": [{"provider": "openai", "allow_cloud": True}],
    }
    response = await client.post(SETTINGS, json=body, headers=admin_headers)
    assert response.status_code == 201, response.text
    saved = response.json()
    assert saved["ollama_model"] == "llama3.2"
    assert saved["fallback_providers"] == [{"provider": "openai", "allow_cloud": True}]
    [warning] = saved["warnings"]  # nothing listens at the test's OLLAMA_BASE_URL
    assert warning.startswith("ollama_model 'llama3.2' was saved, but Ollama could not be asked")


async def test_get_lists_every_provider_without_secrets(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    body = (await client.get(SETTINGS, headers=admin_headers)).json()
    assert [p["provider"] for p in body["providers"]] == [p.value for p in PROVIDERS]
    by_name = {p["provider"]: p for p in body["providers"]}
    assert by_name["openai"]["key_set"] is True
    assert by_name["openai"]["local"] is False
    assert by_name["openai"]["model"] == "gpt-4o-mini"
    assert by_name["lmstudio"]["local"] is True
    assert by_name["lmstudio"]["display_name"] == "LM Studio"
    assert KEY not in str(body)
    assert {f"{p.value}_model" for p in LLMProvider} <= body.keys()
    assert body["warnings"] == []
    assert body["fallback_providers"] == []


# ── warnings about model names ───────────────────────────────────────────────


async def test_a_model_the_provider_does_not_offer_is_saved_with_a_warning(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    response = await patch(client, admin_headers, provider="lmstudio", lmstudio_model="llama-3.3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lmstudio_model"] == "llama-3.3"
    [warning] = body["warnings"]
    assert warning.startswith(
        "lmstudio_model 'llama-3.3' was saved, but LM Studio does not offer it"
    )
    assert "it offers 3 models, e.g.: " in warning
    assert all(name in warning for name in DEFAULT_MODELS)


async def test_an_embedding_model_the_provider_does_not_offer_is_saved_with_a_warning(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    response = await patch(
        client,
        admin_headers,
        lmstudio_model=DEFAULT_MODELS[0],
        lmstudio_embedding_model="nomic-embd",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lmstudio_embedding_model"] == "nomic-embd"
    [warning] = body["warnings"]
    assert warning.startswith(
        "lmstudio_embedding_model 'nomic-embd' was saved, but LM Studio does not offer it"
    )


async def test_a_downloaded_model_that_is_not_loaded_needs_no_warning(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    upstream.set_loaded(["mistral-7b-instruct"])
    response = await patch(client, admin_headers, lmstudio_model="codellama-7b")
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == []


async def test_an_unreachable_provider_is_a_warning_not_a_failure(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    url = unused_url()
    llm_env.set(lmstudio_base_url=url)
    response = await patch(client, admin_headers, provider="lmstudio", lmstudio_model=MODEL)
    assert response.status_code == 200, response.text
    [warning] = response.json()["warnings"]
    assert warning.startswith(
        f"lmstudio_model '{MODEL}' was saved, but LM Studio could not be asked whether it "
        f"offers it: Cannot connect to LM Studio at {url}"
    )


async def test_a_slow_provider_is_given_a_short_deadline(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(model_names_module, "CHECK_DEADLINE", 0.3)
    upstream.delay(3, route="native_models")
    response = await patch(client, admin_headers, lmstudio_model=MODEL)
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == [
        f"lmstudio_model '{MODEL}' was saved, but LM Studio did not list its models within "
        "0.3 s to check that it offers it"
    ]


async def test_only_models_the_request_sets_are_checked(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model="not-on-the-server")
    response = await patch(client, admin_headers, provider="lmstudio")
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == []
    assert upstream.requests == []


async def test_a_cloud_model_is_checked_against_its_listing(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    known = await patch(client, admin_headers, openai_model="acme/gpt-nested")
    assert known.json()["warnings"] == []
    unknown = await patch(client, admin_headers, openai_model="gpt-5-imaginary")
    [warning] = unknown.json()["warnings"]
    assert "OpenAI does not offer it" in warning


async def test_an_ollama_name_without_a_tag_is_its_latest(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    with OllamaStandIn(models={"llama3.2:latest": 131072, "qwen3:0.6b": 40960}) as ollama:
        llm_env.set(lmstudio_model=MODEL, ollama_base_url=ollama.base_url)
        tagless = await patch(client, admin_headers, ollama_model="llama3.2")
        unknown = await patch(client, admin_headers, ollama_model="llama3.3")
        listed = await client.get("/api/v1/llm-settings/ollama/models", headers=admin_headers)
    assert tagless.json()["warnings"] == []
    [warning] = unknown.json()["warnings"]
    assert "Ollama does not offer it" in warning
    assert "llama3.2:latest" in warning
    assert listed.json() == ["llama3.2:latest", "qwen3:0.6b"]


# ── the fallback chain ───────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("chain", "says"),
    [
        (["openai", "openai"], "openai is listed more than once"),
        ([p.value for p in PROVIDERS], f"at most {len(PROVIDERS) - 1} providers"),
        (
            ["openai"],
            "falling back from LM Studio (local) to OpenAI (cloud) would send prompts off this "
            'machine; to allow it, send {"provider": "openai", "allow_cloud": true}',
        ),
    ],
    ids=["duplicate", "too_many", "cloud_from_local"],
)
async def test_a_chain_that_cannot_work_is_422_and_saves_nothing(
    client: httpx.AsyncClient,
    openai_env: OpenAIEnv,
    admin_headers: Headers,
    chain: list[str],
    says: str,
) -> None:
    response = await patch(client, admin_headers, fallback_providers=chain)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "fallback_providers"]
    assert error["type"] == "llm_fallback_settings_error"
    assert says in error["msg"]
    shown = (await client.get(SETTINGS, headers=admin_headers)).json()
    assert (shown["source"], shown["fallback_providers"]) == ("environment", [])


@pytest.mark.parametrize("chain", [["skynet"], [{"provider": "openai", "cloud": True}], [42]])
async def test_malformed_entries_are_422_naming_the_field(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers, chain: list[Any]
) -> None:
    response = await patch(client, admin_headers, fallback_providers=chain)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:3] == ["body", "fallback_providers", 0]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"openai_api_key": None}, "OpenAI: OPENAI_API_KEY is not set"),
        (
            {"openai_model": None},
            "OpenAI has no model configured: send `openai_model`, or set OPENAI_MODEL",
        ),
    ],
    ids=["no_key", "no_model"],
)
async def test_an_unusable_fallback_is_422_naming_what_to_set(
    client: httpx.AsyncClient,
    openai_env: OpenAIEnv,
    admin_headers: Headers,
    env: dict[str, object],
    says: str,
) -> None:
    openai_env.set(**env)
    chain = [{"provider": "openai", "allow_cloud": True}]
    response = await patch(client, admin_headers, fallback_providers=chain)
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"][0]["msg"]


async def test_cloud_fallback_from_local_with_the_opt_in_is_saved_and_effective(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    chain = [{"provider": "openai", "allow_cloud": True}]
    response = await patch(client, admin_headers, fallback_providers=chain)
    assert response.status_code == 200, response.text
    assert response.json()["fallback_providers"] == chain
    assert response.json()["warnings"] == []
    shown = (await client.get(SETTINGS, headers=admin_headers)).json()
    assert shown["fallback_providers"] == chain
    effective = await load_effective_settings()
    assert effective.fallbacks == (FallbackEntry(LLMProvider.OPENAI, allow_cloud=True),)


async def test_a_bare_name_is_shorthand_and_local_from_cloud_needs_no_opt_in(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    response = await patch(
        client, admin_headers, provider="openai", fallback_providers=["lmstudio"]
    )
    assert response.status_code == 200, response.text
    assert response.json()["fallback_providers"] == [{"provider": "lmstudio", "allow_cloud": False}]


async def test_the_seed_patch_always_saves_dropping_the_new_primary_from_the_chain(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    first = await patch(client, admin_headers, provider="openai", fallback_providers=["lmstudio"])
    assert first.status_code == 200, first.text
    seed = await patch(client, admin_headers, provider="lmstudio", lmstudio_model=MODEL)
    assert seed.status_code == 200, seed.text
    body = seed.json()
    assert (body["provider"], body["model"]) == ("lmstudio", MODEL)
    assert body["fallback_providers"] == []
    assert body["warnings"] == [
        "LM Studio is the active provider, so it was removed from fallback_providers"
    ]
    # Removed for good: switching back does not bring it back.
    back = await patch(client, admin_headers, provider="openai")
    assert back.json()["fallback_providers"] == []


async def test_a_saved_chain_broken_by_another_change_is_a_warning(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    chain = [{"provider": "openai", "allow_cloud": True}]
    assert (await patch(client, admin_headers, fallback_providers=chain)).status_code == 200
    openai_env.set(openai_model=None)
    response = await patch(client, admin_headers, lmstudio_model=MODEL)
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == [
        "fallback_providers: OpenAI has no model configured: send `openai_model`, or set "
        "OPENAI_MODEL; it is skipped as a fallback until then"
    ]


async def test_the_env_default_applies_until_a_chain_is_saved(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    openai_env.set(llm_fallback_providers=["openai"], llm_fallback_allow_cloud=["openai"])
    shown = (await client.get(SETTINGS, headers=admin_headers)).json()
    assert shown["fallback_providers"] == [{"provider": "openai", "allow_cloud": True}]
    emptied = await patch(client, admin_headers, fallback_providers=[])
    assert emptied.status_code == 200, emptied.text
    assert emptied.json()["fallback_providers"] == [{"provider": "openai", "allow_cloud": True}]
    assert emptied.json()["warnings"] == [
        "fallback_providers is empty, so LLM_FALLBACK_PROVIDERS applies: openai"
    ]


# ── discovery for every provider ─────────────────────────────────────────────


async def test_openai_discovery_through_the_stand_in(
    client: httpx.AsyncClient,
    openai_env: OpenAIEnv,
    openai_upstream: StandInServer,
    admin_headers: Headers,
    make_user: UserFactory,
) -> None:
    user = await make_user()
    url = "/api/v1/llm-settings/openai/models"
    ids = await client.get(url, headers=user.headers)
    assert ids.status_code == 200, ids.text
    assert ids.json() == ["gpt-4o-mini", "acme/gpt-nested"]
    as_user = (await client.get(f"{url}?detail=true", headers=user.headers)).json()
    assert as_user["base_url"] is None
    assert as_user["message"] is None
    assert as_user["loaded"] == []
    assert as_user["models"][0] == {
        "id": "gpt-4o-mini",
        "type": None,
        "state": None,
        "max_context_length": None,
        "publisher": None,
        "quantization": None,
        "structured_output": None,
    }
    as_admin = (await client.get(f"{url}?detail=true", headers=admin_headers)).json()
    assert as_admin["base_url"] == openai_upstream.base_url
    assert openai_upstream.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_openrouter_discovery_says_which_models_do_structured_output(
    client: httpx.AsyncClient, llm_env: LLMEnv, make_user: UserFactory
) -> None:
    user = await make_user()
    with OpenRouterStandIn(api_key="sk-or-test") as openrouter:
        llm_env.set(openrouter_api_key="sk-or-test", openrouter_base_url=openrouter.base_url)
        url = "/api/v1/llm-settings/openrouter/models?detail=true"
        body = (await client.get(url, headers=user.headers)).json()
    support = {m["id"]: m["structured_output"] for m in body["models"]}
    assert support == {"openai/gpt-4o": True, "meta-llama/llama-3.1-8b-instruct": False}


async def test_discovery_of_an_unconfigured_provider_says_what_to_set(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    llm_env.set(openai_api_key=None)
    response = await client.get("/api/v1/llm-settings/openai/models", headers=admin_headers)
    assert response.status_code == 400
    assert "OPENAI_API_KEY is not set" in response.json()["detail"]


async def test_discovery_of_an_unknown_provider_is_422_listing_the_choices(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers
) -> None:
    response = await client.get("/api/v1/llm-settings/skynet/models", headers=admin_headers)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "provider"]
    assert all(f"'{p.value}'" in error["msg"] for p in PROVIDERS)


async def test_lm_studio_detail_names_structured_output_and_quantization(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    url = "/api/v1/llm-settings/lmstudio/models?detail=true"
    body = (await client.get(url, headers=admin_headers)).json()
    assert body["models"][0]["quantization"] == "Q4_K_M"
    assert body["models"][0]["structured_output"] is None
    assert [r.path for r in upstream.requests] == ["/api/v1/models"]


async def test_an_explicit_null_provider_is_422_and_saves_nothing(
    client: httpx.AsyncClient, openai_env: OpenAIEnv, admin_headers: Headers
) -> None:
    # Found by hand: it used to reach the NOT NULL column and answer 409 "conflicts".
    response = await patch(client, admin_headers, provider=None)
    assert response.status_code == 422, response.text
    assert "provider cannot be null" in response.text
    assert (await client.get(SETTINGS, headers=admin_headers)).json()["source"] == "environment"
