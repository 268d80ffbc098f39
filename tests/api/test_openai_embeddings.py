"""`POST /v1/embeddings`, driven by the official `openai` SDK over real HTTP against each
provider's stand-in (LM Studio, OpenAI, OpenRouter, Ollama, Bedrock)."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from tests.api.llm_faults_support import scrape, value
from tests.api.v1.test_usage import rows_of
from tests.conftest import AppUser, LLMEnv, UserFactory
from tests.upstream import StandInServer, unused_url
from tests.upstream.bedrock_server import API_KEY as BEDROCK_KEY
from tests.upstream.bedrock_server import BedrockStandIn
from tests.upstream.embedding import DIMENSIONS, vector_for
from tests.upstream.ollama_server import OllamaStandIn
from tests.upstream.openrouter_server import OpenRouterStandIn

MODEL = "llama-3.2-3b-instruct"
EMBEDDER = "text-embedding-nomic-embed-text-v1.5"
OPENAI_KEY = "sk-test-0123456789"
TEXTS = ["the quick brown fox", "jumps", "over the lazy dog"]


@pytest.fixture(scope="module")
def openai_upstream() -> Iterator[StandInServer]:
    """A stand-in speaking like api.openai.com."""
    models = ["gpt-4o-mini", "text-embedding-3-small"]
    with StandInServer(error_style="openai", api_key=OPENAI_KEY, models=models) as server:
        yield server


@pytest.fixture(scope="module")
def openrouter() -> Iterator[OpenRouterStandIn]:
    with OpenRouterStandIn(api_key="sk-or-test") as server:
        yield server


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models={"llama3.2:latest": 131072, "nomic-embed-text:latest": 2048}) as s:
        yield s


@pytest.fixture(scope="module")
def bedrock() -> Iterator[BedrockStandIn]:
    with BedrockStandIn() as server:
        yield server


@pytest.fixture(scope="module")
async def user(make_user: UserFactory) -> AppUser:
    return await make_user()


@pytest.fixture(scope="module")
async def api_key(client: httpx.AsyncClient, user: AppUser) -> str:
    key = (await client.post("/api/v1/api-keys", json={"name": "sdk"}, headers=user.headers)).json()
    return str(key["key"])


@pytest.fixture
async def sdk(
    llm_env: LLMEnv,
    upstream: StandInServer,
    openai_upstream: StandInServer,
    openrouter: OpenRouterStandIn,
    ollama: OllamaStandIn,
    bedrock: BedrockStandIn,
    api_key: str,
    app_url: str,
) -> AsyncIterator[openai.AsyncOpenAI]:
    """LM Studio active with a chat and an embedding model; OpenAI and OpenRouter configured
    through their stand-ins."""
    openai_upstream.reset()
    openrouter.reset()
    ollama.reset()
    bedrock.reset()
    upstream.set_models([MODEL, EMBEDDER])
    llm_env.set(
        lmstudio_model=MODEL,
        lmstudio_embedding_model=EMBEDDER,
        lmstudio_max_retries=0,
        openai_api_key=OPENAI_KEY,
        openai_base_url=openai_upstream.base_url,
        openai_embedding_model="text-embedding-3-small",
        openrouter_api_key="sk-or-test",
        openrouter_base_url=openrouter.base_url,
        openrouter_embedding_model="openai/text-embedding-3-small",
        ollama_base_url=ollama.base_url,
        ollama_embedding_model="nomic-embed-text:latest",
        ollama_keep_alive="5m",
        aws_bearer_token_bedrock=BEDROCK_KEY,
        bedrock_endpoint_url=bedrock.url,
        bedrock_embedding_model="amazon.titan-embed-text-v2:0",
        bedrock_max_retries=0,
    )
    async with openai.AsyncOpenAI(
        base_url=f"{app_url}/v1", api_key=api_key, max_retries=0
    ) as sdk_client:
        yield sdk_client


def _floats(embedding: list[float] | str) -> list[float]:
    """A vector as the SDK hands it over: decoded (float, or the SDK's own default base64),
    or the base64 text itself when a caller asked for base64 explicitly."""
    if isinstance(embedding, str):
        raw = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return embedding


def _close(got: list[float] | str, expected: list[float]) -> bool:
    floats = _floats(got)
    return len(floats) == len(expected) and all(
        abs(a - b) < 1e-6 for a, b in zip(floats, expected, strict=True)
    )


@pytest.mark.parametrize("encoding", ["base64", "float", None])
async def test_lm_studio_embeds_a_batch_in_order(
    sdk: openai.AsyncOpenAI, upstream: StandInServer, encoding: str | None
) -> None:
    extra = {} if encoding is None else {"encoding_format": encoding}
    result = await sdk.embeddings.create(model="default", input=TEXTS, **extra)  # type: ignore[arg-type]
    assert [item.index for item in result.data] == [0, 1, 2]
    for item, text in zip(result.data, TEXTS, strict=True):
        assert _close(item.embedding, vector_for(text)), text
    assert result.model == f"lmstudio/{EMBEDDER}"
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (9, 9)
    [sent] = upstream.embeddings_requests
    assert sent.json["model"] == EMBEDDER
    assert sent.json["input"] == TEXTS  # one upstream call for the batch
    assert upstream.chat_requests == []


async def test_more_texts_than_a_call_takes_are_batched_in_order(
    sdk: openai.AsyncOpenAI, upstream: StandInServer
) -> None:
    texts = [f"text {n}" for n in range(300)]
    result = await sdk.embeddings.create(model="default", input=texts)
    assert [item.index for item in result.data] == list(range(300))
    for item, text in zip(result.data, texts, strict=True):
        assert _close(item.embedding, vector_for(text)), text
    assert result.usage.prompt_tokens == 600
    assert sorted(len(r.json["input"]) for r in upstream.embeddings_requests) == [44, 256]


async def test_the_sdk_asks_for_base64_by_default(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient, api_key: str
) -> None:
    response = await client.post(
        "/v1/embeddings",
        json={"input": "one", "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200, response.text
    embedding = response.json()["data"][0]["embedding"]
    assert isinstance(embedding, str)
    assert len(base64.b64decode(embedding)) == 4 * DIMENSIONS
    assert _floats(embedding) == vector_for("one")


async def test_models_lists_the_configured_embedding_models(sdk: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in sdk.models.list()]
    for name in (
        f"lmstudio/{EMBEDDER}",
        "openai/text-embedding-3-small",
        "openrouter/openai/text-embedding-3-small",
        "ollama/nomic-embed-text:latest",
        "bedrock/amazon.titan-embed-text-v2:0",
    ):
        assert name in ids
    assert len(ids) == len(set(ids))


async def test_a_single_string(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.embeddings.create(model=f"lmstudio/{EMBEDDER}", input="hello")
    assert len(result.data) == 1
    assert _close(result.data[0].embedding, vector_for("hello"))


async def test_openai_takes_dimensions(
    sdk: openai.AsyncOpenAI, openai_upstream: StandInServer, upstream: StandInServer
) -> None:
    result = await sdk.embeddings.create(model="openai/", input=TEXTS, dimensions=4)
    assert result.model == "openai/text-embedding-3-small"
    assert [len(item.embedding) for item in result.data] == [4, 4, 4]
    assert _close(result.data[2].embedding, vector_for(TEXTS[2], 4))
    [sent] = openai_upstream.embeddings_requests
    assert (sent.json["model"], sent.json["dimensions"]) == ("text-embedding-3-small", 4)
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert upstream.embeddings_requests == []


async def test_openrouter_embeds_with_its_own_model_names(
    sdk: openai.AsyncOpenAI, openrouter: OpenRouterStandIn
) -> None:
    result = await sdk.embeddings.create(
        model="openrouter/openai/text-embedding-3-small", input=TEXTS, dimensions=16
    )
    assert result.model == "openrouter/openai/text-embedding-3-small"
    assert [len(item.embedding) for item in result.data] == [16, 16, 16]
    [sent] = openrouter.embeddings_requests
    assert sent.json["model"] == "openai/text-embedding-3-small"
    default = await sdk.embeddings.create(model="openrouter/", input="x")
    assert default.model == "openrouter/openai/text-embedding-3-small"


async def test_ollama_embeds_with_its_native_api(
    sdk: openai.AsyncOpenAI, ollama: OllamaStandIn
) -> None:
    result = await sdk.embeddings.create(model="ollama/", input=TEXTS)
    assert result.model == "ollama/nomic-embed-text:latest"
    for item, text in zip(result.data, TEXTS, strict=True):
        assert _close(item.embedding, vector_for(text)), text
    assert result.usage.prompt_tokens == 9
    [sent] = ollama.embed_requests
    assert sent.json == {
        "model": "nomic-embed-text:latest",
        "input": TEXTS,
        "keep_alive": "5m",
    }
    shorter = await sdk.embeddings.create(model="ollama/", input="x", dimensions=4)
    assert len(shorter.data[0].embedding) == 4
    assert ollama.embed_requests[-1].json["dimensions"] == 4
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.embeddings.create(model="ollama/all-minilm", input="x")
    assert "ollama pull all-minilm" in missing.value.message


async def test_bedrock_titan_embeds_one_text_per_call(
    sdk: openai.AsyncOpenAI, bedrock: BedrockStandIn
) -> None:
    result = await sdk.embeddings.create(model="bedrock/", input=TEXTS, dimensions=256)
    assert result.model == "bedrock/amazon.titan-embed-text-v2:0"
    for item, text in zip(result.data, TEXTS, strict=True):
        assert _close(item.embedding, vector_for(text, 256)), text
    assert result.usage.prompt_tokens == 9
    sent = sorted((r.json["inputText"], r.json["dimensions"]) for r in bedrock.invoke_requests)
    assert sent == sorted((text, 256) for text in TEXTS)
    assert all(r.headers["authorization"] == f"Bearer {BEDROCK_KEY}" for r in bedrock.requests)


async def test_bedrock_cohere_embeds_96_texts_per_call_in_order(
    sdk: openai.AsyncOpenAI, bedrock: BedrockStandIn
) -> None:
    texts = [f"text number {n}" for n in range(100)]
    result = await sdk.embeddings.create(model="bedrock/cohere.embed-english-v3", input=texts)
    assert [item.index for item in result.data] == list(range(100))
    for item, text in zip(result.data, texts, strict=True):
        assert _close(item.embedding, vector_for(text)), text
    assert result.usage.prompt_tokens == 300
    batches = sorted(len(r.json["texts"]) for r in bedrock.invoke_requests)
    assert batches == [4, 96]
    assert {r.json["input_type"] for r in bedrock.invoke_requests} == {"search_document"}
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.embeddings.create(
            model="bedrock/cohere.embed-english-v3", input="x", dimensions=256
        )
    assert "does not take `dimensions`" in refused.value.message
    with pytest.raises(openai.BadRequestError) as chat_model:
        await sdk.embeddings.create(model="bedrock/amazon.nova-lite-v1:0", input="x")
    assert "not an embedding model" in chat_model.value.message


async def test_bedrock_faults_keep_their_status(
    sdk: openai.AsyncOpenAI, bedrock: BedrockStandIn
) -> None:
    bedrock.fail("ThrottlingException", "Too many requests", route="invoke")
    with pytest.raises(openai.APIStatusError) as throttled:
        await sdk.embeddings.create(model="bedrock/", input="x")
    assert throttled.value.status_code == 503  # as for chat: the upstream's limit, not ours
    assert "rate limiting" in throttled.value.message
    bedrock.fail("ValidationException", "Malformed input request", route="invoke")
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.embeddings.create(model="bedrock/", input="x")
    assert "Malformed input request" in refused.value.message


async def test_dimensions_where_the_provider_cannot_is_400_naming_it(
    sdk: openai.AsyncOpenAI, upstream: StandInServer
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.embeddings.create(model="default", input="x", dimensions=4)
    assert "LM Studio does not take `dimensions`" in caught.value.message
    assert upstream.embeddings_requests == []


async def test_no_embedding_model_is_400_naming_the_setting(
    sdk: openai.AsyncOpenAI, llm_env: LLMEnv
) -> None:
    llm_env.set(lmstudio_model=MODEL)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.embeddings.create(model="default", input="x")
    message = caught.value.message
    assert "LMSTUDIO_EMBEDDING_MODEL" in message
    assert '"lmstudio_embedding_model"' in message
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.embeddings.create(model="ollama/", input="x")
    assert "OLLAMA_EMBEDDING_MODEL" in caught.value.message


async def test_the_settings_choose_the_default_embedding_model(
    sdk: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    upstream: StandInServer,
) -> None:
    upstream.set_models([MODEL, EMBEDDER, "other-embedder"])
    response = await client.patch(
        "/api/v1/llm-settings",
        json={"lmstudio_embedding_model": "other-embedder"},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["lmstudio_embedding_model"] == "other-embedder"
    assert response.json()["lmstudio_model"] == MODEL
    result = await sdk.embeddings.create(model="default", input="x")
    assert result.model == "lmstudio/other-embedder"
    fields = (await client.get("/api/v1/llm-settings/fields", headers=admin_headers)).json()
    field = next(f for f in fields if f["name"] == "lmstudio_embedding_model")
    assert (field["value"], field["source"], field["env"]) == (
        "other-embedder",
        "database",
        "LMSTUDIO_EMBEDDING_MODEL",
    )


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"input": ""}, "input[0] is empty"),
        ({"input": ["a", ""]}, "input[1] is empty"),
        ({"input": []}, "at least one text"),
        ({"input": [1, 2, 3]}, "token-id arrays are not supported"),
        ({"input": [[1, 2], [3]]}, "token-id arrays are not supported"),
        ({"input": ["a"] * 2049}, "input"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "model": "x\r\ny"}, "model"),
        ({"input": "a", "model": "m" * 100_000}, "model"),
        ({}, "input"),
    ],
    ids=[
        "empty",
        "empty-in-list",
        "no-texts",
        "token-ids",
        "token-id-arrays",
        "too-many",
        "dimensions-0",
        "encoding",
        "crlf-model",
        "huge-model",
        "missing",
    ],
)
async def test_hostile_requests_are_400_in_openais_shape(
    sdk: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    api_key: str,
    upstream: StandInServer,
    body: dict[str, object],
    says: str,
) -> None:
    response = await client.post(
        "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert says in error["message"]
    assert error["type"] == "invalid_request_error"
    assert upstream.embeddings_requests == []


@pytest.mark.parametrize("model", ["default", "openai/", "openrouter/", "ollama/", "bedrock/"])
async def test_text_that_is_not_unicode_is_400_for_every_provider(
    sdk: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    api_key: str,
    bedrock: BedrockStandIn,
    model: str,
) -> None:
    response = await client.post(
        "/v1/embeddings",
        content=b'{"model": "' + model.encode() + b'", "input": ["ok", "bad \\ud800"]}',
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "not valid Unicode" in response.json()["error"]["message"]
    assert bedrock.invoke_requests == []


async def test_upstream_faults_keep_their_status(
    sdk: openai.AsyncOpenAI, upstream: StandInServer, llm_env: LLMEnv
) -> None:
    upstream.fail(500, route="embeddings")
    with pytest.raises(openai.InternalServerError) as caught:
        await sdk.embeddings.create(model="default", input="x")
    assert caught.value.status_code == 502
    upstream.set_models([MODEL])  # the embedding model is not loaded: LM Studio says so
    with pytest.raises(openai.NotFoundError) as refused:
        await sdk.embeddings.create(model="default", input="x")
    assert EMBEDDER in refused.value.message
    llm_env.set(
        lmstudio_model=MODEL, lmstudio_embedding_model=EMBEDDER, lmstudio_base_url=unused_url()
    )
    with pytest.raises(openai.APIStatusError) as down:
        await sdk.embeddings.create(model="default", input="x")
    assert down.value.status_code == 503
    assert "Cannot connect to LM Studio" in down.value.message


async def test_metrics_and_the_ledger_count_embedding_tokens(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient, user: AppUser
) -> None:
    before = await scrape(client)
    labels = {"provider": "lmstudio", "model": EMBEDDER}
    await sdk.embeddings.create(model="default", input=TEXTS)
    with pytest.raises(openai.APIStatusError):  # a name the caller made up: not a label
        await sdk.embeddings.create(model="lmstudio/unconfigured-name", input="x")
    after = await scrape(client)
    requests = "llm_requests_total"
    assert (
        value(after, requests, **labels, kind="embed", outcome="ok")
        - value(before, requests, **labels, kind="embed", outcome="ok")
        == 1
    )
    tokens = "llm_tokens_total"
    assert (
        value(after, tokens, **labels, direction="prompt")
        - value(before, tokens, **labels, direction="prompt")
        == 9
    )
    assert not any("unconfigured-name" in str(labels) for _, labels in after)
    rows = [r for r in await rows_of(user.id, expect=1) if r.kind == "embedding"]
    assert rows, "no ledger row of kind embedding"
    assert any(
        (r.provider, r.model, r.outcome, r.prompt_tokens) == ("lmstudio", EMBEDDER, "ok", 9)
        for r in rows
    )
