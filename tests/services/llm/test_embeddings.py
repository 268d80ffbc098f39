"""`embed()` on the library: the effective settings' embedding model against the LM Studio
stand-in, no fallback, and batching over a scripted wire (order, concurrency, retries)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from app.core.config import LLMProvider, get_settings, set_settings
from app.services.llm import FallbackService, get_llm_service
from app.services.llm.calls import ProviderService
from app.services.llm.errors import (
    LLMConnectionError,
    LLMError,
    LLMInvalidRequestError,
    LLMUpstreamError,
)
from app.services.llm.factory import build_service
from app.services.llm.protocol import Capabilities, EmbeddingRequest, Embeddings, Usage
from tests.conftest import LLMEnv
from tests.conftest import test_settings as settings_for
from tests.upstream import StandInServer, unused_url
from tests.upstream.embedding import vector_for

MODEL = "llama-3.2-3b-instruct"
EMBEDDER = "text-embedding-nomic-embed-text-v1.5"


async def test_embed_uses_the_configured_embedding_model(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    upstream.set_models([MODEL, EMBEDDER])
    llm_env.set(lmstudio_model=MODEL, lmstudio_embedding_model=EMBEDDER)
    llm_service = await get_llm_service()
    result = await llm_service.embed(["a b", "c"])
    assert result.vectors == [vector_for("a b"), vector_for("c")]
    assert (result.provider, result.model, result.dimensions) == ("lmstudio", EMBEDDER, 8)
    assert result.usage == Usage(prompt_tokens=3)
    assert llm_service.model == MODEL  # the chat model is untouched
    assert upstream.embeddings_requests[-1].json["model"] == EMBEDDER


async def test_embed_never_falls_back(llm_env: LLMEnv, upstream: StandInServer) -> None:
    with StandInServer(error_style="openai", api_key="sk-x", models=["e"]) as cloud:
        llm_env.set(
            lmstudio_model=MODEL,
            lmstudio_embedding_model=EMBEDDER,
            lmstudio_base_url=unused_url(),
            lmstudio_max_retries=0,
            openai_api_key="sk-x",
            openai_base_url=cloud.base_url,
            openai_model="e",
            openai_embedding_model="e",
            llm_fallback_providers=[LLMProvider.OPENAI],
            llm_fallback_allow_cloud=[LLMProvider.OPENAI],
        )
        llm_service = await get_llm_service()
        assert isinstance(llm_service, FallbackService)
        with pytest.raises(LLMConnectionError):
            await llm_service.embed("x")
        assert cloud.requests == []


# ── batching, over a scripted wire ──────────────────────────────────────────


class BatchingWire:
    """Embeds `batch` texts per call; each text's vector is [len(text)]; `fail` maps a
    text to the errors its batch raises, one per attempt."""

    capabilities = Capabilities(embeddings=True)

    def __init__(self, batch: int, fail: dict[str, list[LLMError]] | None = None) -> None:
        self.batch = batch
        self.fail = fail or {}
        self.calls: list[list[str]] = []
        self.running = 0
        self.most_at_once = 0

    def embedding_batch(self, model: str) -> int:
        return self.batch

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        texts = list(request.texts)
        self.calls.append(texts)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            # Later batches answer first: order must come from the batch, not the clock.
            await asyncio.sleep(0.001 * (10 - len(self.calls) % 10))
            for text in texts:
                if self.fail.get(text):
                    raise self.fail[text].pop(0)
            return Embeddings([[float(len(t))] for t in texts], Usage(prompt_tokens=len(texts)))
        finally:
            self.running -= 1


@pytest.fixture(autouse=False)
def plain_settings() -> Iterator[None]:
    original = get_settings()
    set_settings(settings_for("sqlite+aiosqlite:///:memory:", lmstudio_max_retries=1))
    yield
    set_settings(original)


def _service(wire: BatchingWire) -> ProviderService:
    built = build_service(LLMProvider.LMSTUDIO, "embedder", "embedder")
    return ProviderService(
        built.spec, built.config, retry_backoff=0, wire=wire, embedding_model="embedder"
    )


@pytest.mark.usefixtures("plain_settings")
async def test_batches_keep_the_order_and_sum_the_usage() -> None:
    wire = BatchingWire(batch=1)
    texts = ["x" * n for n in range(1, 11)]
    result = await _service(wire).embed(texts)
    assert result.vectors == [[float(n)] for n in range(1, 11)]
    assert result.usage.prompt_tokens == 10
    assert len(wire.calls) == 10
    assert 1 < wire.most_at_once <= 4  # concurrent, but bounded


@pytest.mark.usefixtures("plain_settings")
async def test_a_batch_is_retried_and_a_failure_is_itself() -> None:
    retryable = LLMUpstreamError("flaky")
    retryable.retryable = True
    wire = BatchingWire(batch=2, fail={"ccc": [retryable]})
    result = await _service(wire).embed(["a", "bb", "ccc", "dddd", "e"])
    assert result.vectors == [[1.0], [2.0], [3.0], [4.0], [1.0]]
    assert len(wire.calls) == 4  # three batches, one of them twice
    broken = BatchingWire(batch=2, fail={"ccc": [LLMUpstreamError("broken")]})
    with pytest.raises(LLMUpstreamError, match="broken"):
        await _service(broken).embed(["a", "bb", "ccc", "dddd", "e"])


@pytest.mark.usefixtures("plain_settings")
@pytest.mark.parametrize(
    ("texts", "dimensions", "says"),
    [
        ([], None, "at least one text"),
        (["a", ""], None, r"input\[1\] is empty"),
        (["a"] * 2049, None, "at most 2048"),
        (["a"], 0, "dimensions must be between"),
    ],
)
async def test_what_cannot_be_embedded_is_refused_before_any_call(
    texts: list[str], dimensions: int | None, says: str
) -> None:
    wire = BatchingWire(batch=8)
    with pytest.raises(LLMInvalidRequestError, match=says):
        await _service(wire).embed(texts, dimensions=dimensions)
    assert wire.calls == []
