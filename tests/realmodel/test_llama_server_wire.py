"""Wire-level facts of llama.cpp's OpenAI-compatible server that the backend relies on.

Driven through the official ``openai.AsyncOpenAI`` SDK against a real llama.cpp server
(xllamacpp) running SmolLM2-135M. A 135M model says little of sense, so these tests assert
protocol and format, never wording; prompts and ``max_tokens`` stay small to keep each test
well under a few seconds on 2 cores.

Structured output in this build goes through LLGuidance. Observed facts, pinned here:

* ``response_format={"type": "json_schema", ...}`` constrains decoding to the schema's
  structure: required keys, types, ``enum``, ``$ref``/``$defs`` nesting, ``maxItems`` and
  ``maxLength``. A reply cut by ``max_tokens`` is an unparsable prefix, so callers must
  check ``finish_reason == "stop"``.
* Integer ``minimum``/``maximum`` are enforced, but ``number`` (float) bounds are not: the
  backend has to validate replies with pydantic after decoding.
* ``{"type": "json_object"}`` is accepted and forces a JSON object, of no given shape.
* Unknown ``response_format`` types and requests longer than the context are HTTP 400.
* The ``model`` field of a request is not checked: any name is served by the one model.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema
from pydantic import BaseModel, Field, ValidationError

from .llama_server import DEFAULT_N_CTX, LlamaServer

pytestmark = [pytest.mark.realmodel, pytest.mark.timeout(60)]

STORY = "Tell me a story."


def user(prompt: str) -> list[ChatCompletionMessageParam]:
    """A one-message conversation."""
    return [{"role": "user", "content": prompt}]


def json_schema_format(model: type[BaseModel]) -> ResponseFormatJSONSchema:
    """OpenAI's strict ``json_schema`` response format for a pydantic model."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": model.__name__,
            "strict": True,
            "schema": model.model_json_schema(),
        },
    }


def content_of(completion: ChatCompletion) -> str:
    """The text of the first choice (asserting there is one)."""
    assert len(completion.choices) == 1
    content = completion.choices[0].message.content
    assert content is not None
    return content


# ── schemas ─────────────────────────────────────────────────────────────────


class Person(BaseModel):
    """Flat: two scalar fields."""

    name: str
    age: int


class Colour(StrEnum):
    """An enum, emitted by pydantic under ``$defs``."""

    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Item(BaseModel):
    """A nested object with an enum field."""

    label: str = Field(max_length=20)
    colour: Colour


class ShoppingList(BaseModel):
    """Nested: a list of objects with an enum, and a list of strings (bounded to stay short)."""

    title: str = Field(max_length=30)
    items: list[Item] = Field(min_length=1, max_length=3)
    tags: list[Annotated[str, Field(max_length=15)]] = Field(max_length=3)


class Rating(BaseModel):
    """Numeric bounds: an integer and a float range."""

    score: int = Field(ge=1, le=5)
    ratio: float = Field(ge=0.0, le=1.0)


RATING_PROMPT = 'Reply with exactly this JSON: {"score": 9, "ratio": 7.5}'


# ── models endpoint ─────────────────────────────────────────────────────────


async def test_models_lists_the_alias(llama_client: AsyncOpenAI, llama_server: LlamaServer) -> None:
    page = await llama_client.models.list()
    assert [model.id for model in page.data] == [llama_server.model]
    assert page.data[0].object == "model"
    assert page.data[0].owned_by == "llamacpp"


async def test_models_meta_and_props_expose_context_length(llama_server: LlamaServer) -> None:
    """Beyond OpenAI's fields, llama.cpp reports the context size in two places."""
    async with httpx.AsyncClient(base_url=llama_server.root_url, trust_env=False) as http:
        models = (await http.get("/v1/models")).json()
        props = (await http.get("/props")).json()
        health = await http.get("/health")
    entry = models["data"][0]
    assert entry["aliases"] == [llama_server.model]
    meta = entry["meta"]
    assert meta["n_ctx"] == DEFAULT_N_CTX  # the context this server was started with
    assert meta["n_ctx_train"] >= meta["n_ctx"]  # 8192 for SmolLM2
    assert {"n_vocab", "n_params", "size"} <= meta.keys()
    assert props["default_generation_settings"]["n_ctx"] == DEFAULT_N_CTX
    assert props["model_alias"] == llama_server.model
    assert props["total_slots"] == 1
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}


# ── chat completions ────────────────────────────────────────────────────────


async def test_chat_completion_returns_text_and_usage(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    completion = await llama_client.chat.completions.create(
        model=llama_server.model, messages=user("Say hi."), max_tokens=16
    )
    assert completion.object == "chat.completion"
    assert completion.model == llama_server.model
    assert completion.id
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert content_of(completion).strip()
    assert choice.finish_reason in {"stop", "length"}
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_stream_yields_several_chunks_then_usage(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    stream = await llama_client.chat.completions.create(
        model=llama_server.model,
        messages=user("Count to five."),
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    with_choices = [chunk for chunk in chunks if chunk.choices]
    pieces = [chunk.choices[0].delta.content for chunk in with_choices]
    texts = [piece for piece in pieces if piece]
    assert len(texts) >= 3  # one SSE event per token, not one blob
    assert "".join(texts).strip()
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert with_choices[0].choices[0].delta.role == "assistant"
    finish_reasons = [chunk.choices[0].finish_reason for chunk in with_choices]
    assert finish_reasons[-1] in {"stop", "length"}
    assert all(reason is None for reason in finish_reasons[:-1])
    # include_usage: a last chunk with no choices carries the usage
    assert not chunks[-1].choices
    usage = chunks[-1].usage
    assert usage is not None
    assert 0 < usage.completion_tokens <= 16


async def test_max_tokens_cut_reports_length(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    completion = await llama_client.chat.completions.create(
        model=llama_server.model, messages=user(STORY), max_tokens=5
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5


# ── structured output ───────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("schema", "prompt"),
    [
        pytest.param(Person, "Give a person's name and age as JSON.", id="flat"),
        pytest.param(ShoppingList, "Describe a short shopping list as JSON.", id="nested"),
    ],
)
async def test_json_schema_reply_parses_and_validates(
    llama_client: AsyncOpenAI,
    llama_server: LlamaServer,
    schema: type[BaseModel],
    prompt: str,
) -> None:
    completion = await llama_client.chat.completions.create(
        model=llama_server.model,
        messages=user(prompt),
        max_tokens=256,
        temperature=0,
        response_format=json_schema_format(schema),
    )
    assert completion.choices[0].finish_reason == "stop"
    content = content_of(completion)
    assert isinstance(json.loads(content), dict)
    schema.model_validate_json(content)  # structure, enum, maxItems and maxLength all hold


async def test_sdk_parse_helper_round_trips_a_pydantic_model(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    completion = await llama_client.chat.completions.parse(
        model=llama_server.model,
        messages=user("Give a person's name and age as JSON."),
        max_tokens=64,
        temperature=0,
        response_format=Person,
    )
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(completion.choices[0].message.parsed, Person)


@pytest.fixture(scope="module")
async def rating_replies(llama_server: LlamaServer) -> list[dict[str, Any]]:
    """Replies to a prompt asking for an out-of-range score and ratio (greedy, then 2 seeds)."""
    replies: list[dict[str, Any]] = []
    async with AsyncOpenAI(
        base_url=llama_server.base_url, api_key="not-needed", max_retries=0, timeout=30.0
    ) as client:
        for seed in range(3):
            completion = await client.chat.completions.create(
                model=llama_server.model,
                messages=user(RATING_PROMPT),
                max_tokens=40,
                temperature=1.0 if seed else 0.0,
                seed=seed,
                response_format=json_schema_format(Rating),
            )
            assert completion.choices[0].finish_reason == "stop"
            replies.append(json.loads(content_of(completion)))
    return replies


async def test_json_schema_keeps_structure_under_numeric_bounds(
    rating_replies: list[dict[str, Any]],
) -> None:
    for reply in rating_replies:
        assert set(reply) == {"score", "ratio"}
        assert type(reply["score"]) is int
        assert type(reply["ratio"]) in {int, float}


async def test_json_schema_enforces_integer_bounds(rating_replies: list[dict[str, Any]]) -> None:
    """The prompt asks for 9; LLGuidance only lets 1..5 through."""
    assert all(1 <= reply["score"] <= 5 for reply in rating_replies), rating_replies


async def test_json_schema_does_not_enforce_number_bounds(
    rating_replies: list[dict[str, Any]],
) -> None:
    """The prompt asks for 7.5 and gets it despite ``le=1``: pydantic must re-validate.

    Should this fail, llama.cpp started enforcing float bounds; the backend's
    re-validation stays correct, only this pinned fact needs updating.
    """
    out_of_range = [reply for reply in rating_replies if not 0.0 <= reply["ratio"] <= 1.0]
    assert out_of_range, f"every ratio within [0, 1]: {rating_replies}"
    with pytest.raises(ValidationError) as caught:
        Rating.model_validate(out_of_range[0])
    assert [error["loc"] for error in caught.value.errors()] == [("ratio",)]


async def test_json_object_is_accepted_and_forces_an_object(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    completion = await llama_client.chat.completions.create(
        model=llama_server.model,
        messages=user('Reply with the JSON {"ok": true}.'),
        max_tokens=32,
        temperature=0,
        response_format={"type": "json_object"},
    )
    content = content_of(completion)
    assert content.lstrip().startswith("{")
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens: a prefix of an object, not parsable
        assert completion.choices[0].finish_reason == "length"


async def test_unknown_response_format_type_is_a_400(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await llama_client.chat.completions.create(
            model=llama_server.model,
            messages=user("Say hi."),
            max_tokens=5,
            extra_body={"response_format": {"type": "no-such-format"}},
        )
    assert caught.value.status_code == 400
    assert "response_format" in caught.value.message


# ── determinism ─────────────────────────────────────────────────────────────


async def test_temperature_zero_is_repeatable(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    replies = [
        content_of(
            await llama_client.chat.completions.create(
                model=llama_server.model, messages=user(STORY), max_tokens=16, temperature=0
            )
        )
        for _ in range(2)
    ]
    assert replies[0] == replies[1]


async def test_same_seed_repeats_and_seeds_are_honoured(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    async def sample(seed: int) -> str:
        completion = await llama_client.chat.completions.create(
            model=llama_server.model,
            messages=user(STORY),
            max_tokens=16,
            temperature=1.0,
            seed=seed,
        )
        return content_of(completion)

    first = await sample(7)
    assert await sample(7) == first
    others = {await sample(seed) for seed in (1, 2)}
    assert len(others | {first}) >= 2, "different seeds gave the same text: seed ignored?"


async def test_server_defaults_are_repeatable(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    """No seed and no temperature in the request: the server's fixed seed applies."""
    replies = [
        content_of(
            await llama_client.chat.completions.create(
                model=llama_server.model, messages=user(STORY), max_tokens=16
            )
        )
        for _ in range(2)
    ]
    assert replies[0] == replies[1]


# ── errors and leniency ─────────────────────────────────────────────────────


async def test_context_overflow_is_a_400(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await llama_client.chat.completions.create(
            model=llama_server.model, messages=user("hello " * 3000), max_tokens=5
        )
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    assert body.get("type") == "exceed_context_size_error"
    assert body.get("n_ctx") == DEFAULT_N_CTX
    assert body.get("n_prompt_tokens", 0) > DEFAULT_N_CTX


async def test_requested_model_name_is_not_checked(
    llama_client: AsyncOpenAI, llama_server: LlamaServer
) -> None:
    """Unlike LM Studio, llama.cpp serves any model name with its one model."""
    completion = await llama_client.chat.completions.create(
        model="no-such-model", messages=user("Say hi."), max_tokens=3
    )
    assert completion.model == llama_server.model
