"""The facade's model names (one rule for every provider) and `GET /v1/models` when the
provider is down, driven by the official `openai` SDK over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from tests.conftest import LLMEnv, UserFactory
from tests.upstream import StandInServer, unused_url
from tests.upstream.openrouter_server import OpenRouterStandIn

MODEL = "llama-3.2-3b-instruct"
KEY = "sk-test-0123456789"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def openai_upstream() -> Iterator[StandInServer]:
    """A stand-in speaking like api.openai.com."""
    with StandInServer(error_style="openai", api_key=KEY, models=["gpt-4o-mini", "acme/gpt"]) as s:
        yield s


@pytest.fixture(scope="module")
async def api_key(client: httpx.AsyncClient, make_user: UserFactory) -> str:
    """A (non-admin) user's API key, made once per backend: logging in costs a second."""
    user = await make_user()
    key = (await client.post("/api/v1/api-keys", json={"name": "sdk"}, headers=user.headers)).json()
    return str(key["key"])


@pytest.fixture
async def sdk(
    llm_env: LLMEnv, openai_upstream: StandInServer, api_key: str, app_url: str
) -> AsyncIterator[openai.AsyncOpenAI]:
    """LM Studio active with MODEL; OpenAI configured through its stand-in."""
    openai_upstream.reset()
    llm_env.set(
        lmstudio_model=MODEL,
        openai_api_key=KEY,
        openai_base_url=openai_upstream.base_url,
        openai_model="gpt-4o-mini",
    )
    async with openai.AsyncOpenAI(
        base_url=f"{app_url}/v1", api_key=api_key, max_retries=0
    ) as sdk_client:
        yield sdk_client


@pytest.mark.parametrize(
    ("name", "answered_by", "upstream_model"),
    [
        ("default", f"lmstudio/{MODEL}", MODEL),
        ("codellama-7b", "lmstudio/codellama-7b", "codellama-7b"),
        ("lmstudio/mistral-7b-instruct", "lmstudio/mistral-7b-instruct", "mistral-7b-instruct"),
        ("lmstudio/", f"lmstudio/{MODEL}", MODEL),
        ("openai/gpt-4o-mini", "openai/gpt-4o-mini", "gpt-4o-mini"),
        # Only the first segment names a provider: the rest is that provider's model id.
        ("openai/acme/gpt", "openai/acme/gpt", "acme/gpt"),
        # A first segment that is no provider: the whole name, for the configured provider.
        ("qwen/qwen3-8b", "lmstudio/qwen/qwen3-8b", "qwen/qwen3-8b"),
    ],
)
async def test_one_rule_for_model_names(
    sdk: openai.AsyncOpenAI,
    upstream: StandInServer,
    openai_upstream: StandInServer,
    name: str,
    answered_by: str,
    upstream_model: str,
) -> None:
    upstream.set_models([MODEL, "codellama-7b", "mistral-7b-instruct", "qwen/qwen3-8b"])
    reply = await sdk.chat.completions.create(model=name, messages=HELLO)
    assert reply.model == answered_by
    provider = answered_by.partition("/")[0]
    reached = upstream if provider == "lmstudio" else openai_upstream
    assert reached.chat_requests[-1].json["model"] == upstream_model
    other = openai_upstream if provider == "lmstudio" else upstream
    assert other.chat_requests == []


async def test_openrouters_own_slash_names_take_its_prefix(
    sdk: openai.AsyncOpenAI, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    with OpenRouterStandIn(api_key="sk-or-test") as openrouter:
        llm_env.set(
            lmstudio_model=MODEL,
            openrouter_api_key="sk-or-test",
            openrouter_base_url=openrouter.base_url,
        )
        reply = await sdk.chat.completions.create(model="openrouter/openai/gpt-4o", messages=HELLO)
        sent = openrouter.chat_requests[-1].json["model"]
    assert (reply.model, sent) == ("openrouter/openai/gpt-4o", "openai/gpt-4o")
    assert upstream.chat_requests == []


async def test_an_omitted_model_means_the_settings(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/chat/completions", json={"messages": HELLO}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == f"lmstudio/{MODEL}"


async def test_a_stream_says_who_answered(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="openai/gpt-4o-mini", messages=HELLO, stream=True
    )
    models = {chunk.model async for chunk in stream}
    assert models == {"openai/gpt-4o-mini"}


async def test_models_lists_the_active_providers_and_the_configured_ones(
    sdk: openai.AsyncOpenAI, upstream: StandInServer
) -> None:
    page = await sdk.models.list()
    ids = [m.id for m in page.data]
    assert ids == [
        "default",
        "lmstudio/llama-3.2-3b-instruct",
        "lmstudio/mistral-7b-instruct",
        "lmstudio/codellama-7b",
        "openai/gpt-4o-mini",
    ]
    assert (page.model_extra or {}).get("provider_errors") is None


async def test_models_with_the_provider_down_is_200_saying_why(
    sdk: openai.AsyncOpenAI,
    llm_env: LLMEnv,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
) -> None:
    url = unused_url()
    llm_env.set(lmstudio_base_url=url, lmstudio_model=MODEL)
    page = await sdk.models.list()  # what an OpenAI client does: it still gets a list
    assert [m.id for m in page.data] == ["default", f"lmstudio/{MODEL}"]
    [error] = page.model_extra["provider_errors"]  # type: ignore[index]
    assert error["provider"] == "lmstudio"
    assert error["type"] == "llm_connection_error"
    assert error["message"].startswith("Cannot connect to LM Studio: ")
    assert url not in error["message"]  # the address is for admins
    as_admin = (await client.get("/v1/models", headers=admin_headers)).json()
    assert as_admin["provider_errors"][0]["message"].startswith(
        f"Cannot connect to LM Studio at {url}: "
    )
