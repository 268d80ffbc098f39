"""Tool calling in the Python interface (`get_tool_calls`, `complete(tools=...)`) against the
LM Studio stand-in, and what it leaves in the usage ledger and the metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from app.core.config import LLMProvider
from app.services.llm import (
    LLMInvalidRequestError,
    LLMValidationError,
    OllamaConfig,
    ProviderService,
    ToolUse,
    tool_from_model,
)
from app.services.llm.providers import PROVIDERS
from tests.conftest import LLMEnv
from tests.services.test_usage_ledger import MODEL, lmstudio, rows_since
from tests.upstream import StandInServer


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str
    days: int = 1


class GetTime(BaseModel):
    zone: str


def _tool_calls_counted() -> float:
    """LM Studio's tool calls counted, whatever the model label (the model once discovery
    listed it, else "other"); the function's name is never a label."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "llm_tool_calls"
        for sample in metric.samples
        if sample.name == "llm_tool_calls_total"
        and sample.labels["provider"] == "lmstudio"
        and set(sample.labels) == {"provider", "model"}
    )


def test_a_tool_from_a_model() -> None:
    assert tool_from_model(GetWeather) == {
        "type": "function",
        "function": {
            "name": "GetWeather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"title": "City", "type": "string"},
                    "days": {"default": 1, "title": "Days", "type": "integer"},
                },
                "required": ["city"],
            },
        },
    }


async def test_get_tool_calls_validates_each_calls_arguments(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    service = lmstudio(upstream.base_url, MODEL)
    calls = await service.get_tool_calls("Weather in Paris?", [GetWeather, GetTime])
    assert len(calls) == 1
    assert isinstance(calls[0], ToolUse)
    assert calls[0].name == "GetWeather"
    assert isinstance(calls[0].arguments, GetWeather)
    sent = upstream.chat_requests[-1].json
    assert [t["function"]["name"] for t in sent["tools"]] == ["GetWeather", "GetTime"]
    assert sent["tool_choice"] == "auto"


async def test_a_named_tool_choice_is_sent_as_openais(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    service = lmstudio(upstream.base_url, MODEL)
    calls = await service.get_tool_calls("Time?", [GetWeather, GetTime], tool_choice="GetTime")
    assert [c.name for c in calls] == ["GetTime"]
    assert upstream.chat_requests[-1].json["tool_choice"] == {
        "type": "function",
        "function": {"name": "GetTime"},
    }
    with pytest.raises(ValueError, match="names none of the tools"):
        await service.get_tool_calls("Time?", [GetWeather], tool_choice="GetTime")
    with pytest.raises(ValueError, match="same class name"):
        await service.get_tool_calls("Time?", [GetTime, GetTime])


async def test_text_instead_of_a_call_is_an_empty_list(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    service = lmstudio(upstream.base_url, MODEL)
    assert await service.get_tool_calls("hi", [GetWeather], tool_choice="none") == []


@pytest.mark.parametrize(
    ("calls", "reason"),
    [
        ([("GetWeather", {"days": 2})], "do not validate"),
        ([("Unknown", {})], "none of the tools offered"),
    ],
)
async def test_arguments_that_do_not_validate_are_a_validation_error(
    llm_env: LLMEnv,
    upstream: StandInServer,
    calls: list[tuple[str, object]],
    reason: str,
) -> None:
    upstream.reply_tool_calls(*calls)
    with pytest.raises(LLMValidationError, match=reason):
        await lmstudio(upstream.base_url, MODEL).get_tool_calls("Weather?", [GetWeather])


async def test_a_forced_choice_on_ollama_is_refused_before_sending(llm_env: LLMEnv) -> None:
    config = OllamaConfig(base_url="http://127.0.0.1:9", default_model="llama3.2")
    service = ProviderService(PROVIDERS[LLMProvider.OLLAMA], config, retry_backoff=0)
    with pytest.raises(LLMInvalidRequestError, match="Ollama has no way to force a tool call"):
        await service.get_tool_calls("Weather?", [GetWeather], tool_choice="required")


async def test_tool_calls_are_counted_in_the_ledger_and_the_metrics(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    started = datetime.now(UTC)
    service = lmstudio(upstream.base_url, MODEL)
    before = _tool_calls_counted()
    tools = [tool_from_model(GetWeather)]
    completion = await service.complete([{"role": "user", "content": "Paris?"}], tools=tools)
    assert completion.finish_reason == "tool_calls"
    upstream.reply_tool_calls(("GetWeather", {"city": "Oslo"}), ("GetWeather", {"city": "Rome"}))
    chunks = [
        c async for c in service.stream_chunks([{"role": "user", "content": "2?"}], tools=tools)
    ]
    assert {c.name for chunk in chunks for c in chunk.tool_calls if c.name} == {"GetWeather"}
    assert chunks[-1].finish_reason == "tool_calls"
    rows = await rows_since(started)
    assert [(r.kind, r.outcome) for r in rows] == [("tools", "ok"), ("tools_stream", "ok")]
    assert _tool_calls_counted() - before == 3


@pytest.mark.parametrize("rest_v1", [True, False])
async def test_lm_studios_listings_say_which_models_were_trained_for_tools(
    llm_env: LLMEnv, upstream: StandInServer, rest_v1: bool
) -> None:
    upstream.rest_v1 = rest_v1  # False: REST API v0's listing, as LM Studio 0.3 serves it
    upstream.not_for_tools.add("codellama-7b")
    listed = await lmstudio(upstream.base_url, MODEL).list_models()
    assert {m.id: m.tool_use for m in listed} == {
        MODEL: True,
        "mistral-7b-instruct": True,
        "codellama-7b": False,
    }
    with pytest.raises(LLMInvalidRequestError, match="codellama-7b was not trained for tool"):
        await lmstudio(upstream.base_url, "codellama-7b").get_tool_calls("hi", [GetWeather])
