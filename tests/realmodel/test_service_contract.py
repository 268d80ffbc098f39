"""The service's own contract against a real llama.cpp server with a real (tiny) model.

SmolLM2-135M is far too small to be right about anything: these tests assert protocol and
format (types, validation, chunking), never wording.
"""

from __future__ import annotations

import logging
from enum import StrEnum

import pytest
from pydantic import BaseModel, Field

from app.services.llm import ProviderService
from app.services.llm.config import LMStudioConfig
from app.services.llm.providers.lmstudio import SPEC
from app.services.llm.structured import StructuredMode, generate_structured

from .llama_server import LlamaServer


@pytest.fixture
def service(llama_server: LlamaServer) -> ProviderService:
    config = LMStudioConfig(
        base_url=llama_server.base_url, default_model=llama_server.model, timeout=60
    )
    return ProviderService(SPEC, config, retry_backoff=0.01)


class City(BaseModel):
    name: str
    country: str


class Color(StrEnum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Pet(BaseModel):
    name: str
    color: Color
    tags: list[str] = Field(max_length=3)


class Owner(BaseModel):
    owner: str
    pets: list[Pet] = Field(min_length=1, max_length=2)


class Rating(BaseModel):
    movie: str
    stars: int = Field(ge=1, le=5)
    score: float = Field(ge=0, le=10)


async def test_discovery_falls_back_to_v1_models(
    service: ProviderService, llama_server: LlamaServer
) -> None:
    models = await service.list_models()
    assert [m.id for m in models] == [llama_server.model]
    assert models[0].max_context_length == llama_server.n_ctx


async def test_get_response_returns_text(service: ProviderService) -> None:
    text = await service.get_response("Say hello.", max_tokens=16, temperature=0)
    assert isinstance(text, str)
    assert text.strip()


async def test_stream_response_arrives_in_chunks(service: ProviderService) -> None:
    chunks = [c async for c in service.stream_response("Count to ten.", max_tokens=24)]
    assert len(chunks) > 3
    assert "".join(chunks).strip()


async def test_usage_and_finish_reason_are_reported(service: ProviderService) -> None:
    completion = await service.complete(
        [{"role": "user", "content": "Tell me a story."}], max_tokens=5, temperature=0
    )
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("prompt", "model"),
    [
        ("Name a city in France and its country.", City),
        ("Describe an owner and one pet with a color and tags.", Owner),
        ("Rate the movie Jaws.", Rating),
    ],
    ids=["flat", "nested-enum-list", "numeric-bounds"],
)
async def test_structured_responses_validate(
    service: ProviderService, prompt: str, model: type[BaseModel]
) -> None:
    # Seeded and at temperature 0, so each case is repeatable; the grammar fixes the shape
    # and the validate-and-repair loop catches what it cannot (numeric bounds).
    result = await generate_structured(
        service, prompt, model, temperature=0, seed=7, max_tokens=256
    )
    assert isinstance(result.value, model)
    assert result.mode is StructuredMode.JSON_SCHEMA
    assert 1 <= result.attempts <= 1 + service.config.max_retries


async def test_a_call_after_a_stream_needs_no_backoff(
    service: ProviderService, caplog: pytest.LogCaptureFixture
) -> None:
    # llama.cpp closes the connection after a stream; the pooled client must not turn that
    # into a connection error with a retry delay.
    caplog.set_level(logging.DEBUG, logger="app.services.llm")
    _ = [c async for c in service.stream_response("Hi", max_tokens=4)]
    assert await service.get_response("Hi", max_tokens=4)
    assert "llm retry" not in caplog.text
