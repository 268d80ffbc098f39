"""Embeddings computed for real: llama.cpp (xllamacpp) serving SmolLM2-135M with
`/v1/embeddings` on, as the LM Studio provider, reached through the facade by the official
`openai` SDK and through the library's `embed()`.

No small embedding-trained GGUF ships as a package, so the vectors are SmolLM2's mean-pooled
hidden states: real numbers from a real model, whose meaning is not asserted; the protocol
is (one vector per text in order, the model's size, repeatable, usage counted).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from app.services.llm import get_llm_service
from tests.conftest import LLMEnv, UserFactory

from .conftest import require_real_model
from .llama_server import DEFAULT_THREADS, LlamaServer

ALIAS = "smollm2-135m-embed"
HIDDEN_SIZE = 576  # SmolLM2-135M's
TEXTS = ["The cat sat on the mat.", "Quarterly revenue grew by five percent.", "hello"]


@pytest.fixture(scope="module")
def embedding_server() -> Iterator[LlamaServer]:
    """A second llama.cpp server, with embeddings on (the session's chat one stays as it is)."""
    require_real_model()
    with LlamaServer(model=ALIAS, n_threads=DEFAULT_THREADS, embeddings=True) as server:
        yield server


@pytest.fixture
async def sdk(
    llm_env: LLMEnv,
    embedding_server: LlamaServer,
    client: httpx.AsyncClient,
    make_user: UserFactory,
    app_url: str,
) -> AsyncIterator[openai.AsyncOpenAI]:
    llm_env.set(
        lmstudio_base_url=embedding_server.base_url,
        lmstudio_model=ALIAS,
        lmstudio_embedding_model=ALIAS,
    )
    user = await make_user()
    key = (await client.post("/api/v1/api-keys", json={"name": "sdk"}, headers=user.headers)).json()
    async with openai.AsyncOpenAI(
        base_url=f"{app_url}/v1", api_key=key["key"], max_retries=0, timeout=60
    ) as sdk_client:
        yield sdk_client


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a, b, strict=True)
    )


async def test_the_sdk_embeds_through_the_facade(sdk: openai.AsyncOpenAI) -> None:
    batch = await sdk.embeddings.create(model="default", input=TEXTS)  # base64, decoded
    assert batch.model == f"lmstudio/{ALIAS}"
    vectors = [item.embedding for item in batch.data]
    assert [len(v) for v in vectors] == [HIDDEN_SIZE] * 3
    assert all(math.isfinite(x) for v in vectors for x in v)
    assert batch.usage.prompt_tokens > len(TEXTS)
    assert not _same(vectors[0], vectors[1])
    # Each text alone gets the vector it got in the batch: the order is kept.
    for text, vector in zip(TEXTS, vectors, strict=True):
        alone = await sdk.embeddings.create(model="default", input=text, encoding_format="float")
        assert _same(alone.data[0].embedding, vector), text


async def test_the_library_embeds(sdk: openai.AsyncOpenAI) -> None:
    llm_service = await get_llm_service()
    result = await llm_service.embed(TEXTS[:2])
    assert (result.provider, result.model, result.dimensions) == ("lmstudio", ALIAS, HIDDEN_SIZE)
    assert len(result.vectors) == 2
    assert result.usage.prompt_tokens > 2
