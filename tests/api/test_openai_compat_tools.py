"""Tool calling through the facade, driven by the official `openai` SDK over real HTTP against
each provider's stand-in speaking that provider's own tool wire."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LLMEnv, UserFactory
from tests.upstream import StandInServer
from tests.upstream.bedrock_server import API_KEY as BEDROCK_KEY
from tests.upstream.bedrock_server import BedrockStandIn
from tests.upstream.ollama_server import OllamaStandIn
from tests.upstream.openrouter_server import OpenRouterStandIn

MODEL = "llama-3.2-3b-instruct"
OPENAI_KEY = "sk-test-0123456789"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def openai_upstream() -> Iterator[StandInServer]:
    with StandInServer(error_style="openai", api_key=OPENAI_KEY, models=["gpt-4o-mini"]) as s:
        yield s


@pytest.fixture(scope="module")
def openrouter_upstream() -> Iterator[OpenRouterStandIn]:
    with OpenRouterStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def ollama_upstream() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models={"llama3.2:latest": 131072}) as server:
        yield server


@pytest.fixture(scope="module")
def bedrock_upstream() -> Iterator[BedrockStandIn]:
    with BedrockStandIn() as server:
        yield server


@pytest.fixture(scope="module")
async def api_key(client: httpx.AsyncClient, make_user: UserFactory) -> str:
    user = await make_user()
    key = (await client.post("/api/v1/api-keys", json={"name": "sdk"}, headers=user.headers)).json()
    return str(key["key"])


@pytest.fixture
async def sdk(
    llm_env: LLMEnv,
    openai_upstream: StandInServer,
    openrouter_upstream: OpenRouterStandIn,
    ollama_upstream: OllamaStandIn,
    bedrock_upstream: BedrockStandIn,
    api_key: str,
    app_url: str,
) -> AsyncIterator[openai.AsyncOpenAI]:
    """Every provider configured through its stand-in; LM Studio active."""
    bedrock_upstream.reset()
    openai_upstream.reset()
    openrouter_upstream.reset()
    ollama_upstream.reset()
    llm_env.set(
        lmstudio_model=MODEL,
        openai_api_key=OPENAI_KEY,
        openai_base_url=openai_upstream.base_url,
        openai_model="gpt-4o-mini",
        openrouter_api_key="sk-or-test",
        openrouter_base_url=openrouter_upstream.base_url,
        openrouter_model="openai/gpt-4o",
        ollama_base_url=ollama_upstream.base_url,
        ollama_model="llama3.2:latest",
        bedrock_endpoint_url=bedrock_upstream.url,
        aws_bearer_token_bedrock=BEDROCK_KEY,
        bedrock_model="amazon.nova-lite-v1:0",
    )
    async with openai.AsyncOpenAI(
        base_url=f"{app_url}/v1", api_key=api_key, max_retries=0
    ) as sdk_client:
        yield sdk_client


PROVIDERS = ["lmstudio/", "openai/", "openrouter/", "ollama/", "bedrock/"]


async def _stream_turn(
    sdk: openai.AsyncOpenAI, model: str, messages: list[Any], **extra: Any
) -> tuple[str, list[dict[str, Any]], str | None]:
    """Text, tool calls (put together from their fragments by index) and finish reason."""
    stream = await sdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER, TIME], stream=True, **extra
    )
    text, calls, finish = "", {}, None
    async for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        for piece in choice.delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            if piece.function is not None:
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
        finish = choice.finish_reason or finish
    return text, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("model", PROVIDERS)
async def test_two_turn_tool_conversation(sdk: openai.AsyncOpenAI, model: str) -> None:
    first = await sdk.chat.completions.create(model=model, messages=QUESTION, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    messages: list[Any] = [
        *QUESTION,
        choice.message,
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
    ]
    second = await sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The tool said: sunny, 24 C"
    assert not second.choices[0].message.tool_calls


NAMED = {"type": "function", "function": {"name": "get_time"}}
# Ollama has no tool_choice: "auto" there (a named function is refused, see below).
STREAMED = [(p, NAMED, "get_time") for p in PROVIDERS if p != "ollama/"]
STREAMED.append(("ollama/", "auto", "get_weather"))


@pytest.mark.parametrize(("model", "choice", "name"), STREAMED)
async def test_two_turn_tool_conversation_streamed(
    sdk: openai.AsyncOpenAI, model: str, choice: Any, name: str
) -> None:
    text, calls, finish = await _stream_turn(sdk, model, QUESTION, tool_choice=choice)
    assert (text, finish) == ("", "tool_calls")
    assert [c["name"] for c in calls] == [name]
    assert isinstance(json.loads(calls[0]["arguments"]), dict)
    assert calls[0]["id"]
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": calls[0]["id"],
                "type": "function",
                "function": {"name": name, "arguments": calls[0]["arguments"]},
            }
        ],
    }
    result = {"role": "tool", "tool_call_id": calls[0]["id"], "content": "12:00"}
    text, calls, finish = await _stream_turn(sdk, model, [*QUESTION, assistant, result])
    assert (text, calls, finish) == ("The tool said: 12:00", [], "stop")


async def test_tools_and_choice_reach_the_upstream(
    sdk: openai.AsyncOpenAI, upstream: StandInServer
) -> None:
    await sdk.chat.completions.create(
        model="default", messages=QUESTION, tools=[WEATHER, TIME], tool_choice="required"
    )
    sent = upstream.chat_requests[-1].json
    assert sent["tools"] == [WEATHER, TIME]
    assert sent["tool_choice"] == "required"


async def test_ollama_sends_tools_natively_and_names_the_results_function(
    sdk: openai.AsyncOpenAI, ollama_upstream: OllamaStandIn
) -> None:
    call = {"id": "call_7", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    messages = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_7", "content": "sunny"},
    ]
    await sdk.chat.completions.create(model="ollama/", messages=messages, tools=[WEATHER])
    sent = ollama_upstream.chat_requests[-1].json
    assert sent["tools"] == [WEATHER]
    assert "tool_choice" not in sent
    assert sent["messages"][1]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}


@pytest.mark.parametrize("choice", ["required", NAMED])
async def test_ollama_refuses_a_forced_tool_choice(
    sdk: openai.AsyncOpenAI, ollama_upstream: OllamaStandIn, choice: Any
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model="ollama/", messages=QUESTION, tools=[WEATHER, TIME], tool_choice=choice
        )
    assert "Ollama has no way to force a tool call (model llama3.2:latest)" in str(caught.value)
    assert ollama_upstream.chat_requests == []


async def test_ollama_none_sends_no_tools(
    sdk: openai.AsyncOpenAI, ollama_upstream: OllamaStandIn
) -> None:
    reply = await sdk.chat.completions.create(
        model="ollama/", messages=QUESTION, tools=[WEATHER], tool_choice="none"
    )
    assert reply.choices[0].message.content == "Echo: What is the weather in Paris?"
    assert "tools" not in ollama_upstream.chat_requests[-1].json


async def test_bedrock_speaks_converse_tool_blocks(
    sdk: openai.AsyncOpenAI, bedrock_upstream: BedrockStandIn
) -> None:
    call = {"id": "tooluse_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    messages = [
        *QUESTION,
        {"role": "assistant", "content": "Let me look.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
    ]
    reply = await sdk.chat.completions.create(
        model="bedrock/", messages=messages, tools=[WEATHER], tool_choice="required"
    )
    assert reply.choices[0].message.content == "The tool said: sunny"
    sent = bedrock_upstream.converse_requests[-1].json
    assert sent["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "The current weather in a city.",
                    "inputSchema": {"json": WEATHER["function"]["parameters"]},  # type: ignore[index]
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"text": "Let me look."},
                {
                    "toolUse": {
                        "toolUseId": "tooluse_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "sunny"}]}}],
        },
    ]


async def test_bedrock_none_leaves_the_tools_out(
    sdk: openai.AsyncOpenAI, bedrock_upstream: BedrockStandIn
) -> None:
    reply = await sdk.chat.completions.create(
        model="bedrock/", messages=QUESTION, tools=[WEATHER], tool_choice="none"
    )
    assert reply.choices[0].finish_reason == "stop"
    assert "toolConfig" not in bedrock_upstream.converse_requests[-1].json


async def test_bedrock_none_in_a_conversation_with_tool_calls_is_a_400(
    sdk: openai.AsyncOpenAI, bedrock_upstream: BedrockStandIn
) -> None:
    call = {"id": "tooluse_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": "{}"}
    messages = [
        *QUESTION,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model="bedrock/", messages=messages, tools=[WEATHER], tool_choice="none"
        )
    assert "AWS Bedrock has no tool_choice `none`" in str(caught.value)
    assert bedrock_upstream.converse_requests == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_model_lm_studio_lists_as_not_trained_for_tools_is_a_400(
    sdk: openai.AsyncOpenAI, upstream: StandInServer, stream: bool
) -> None:
    upstream.not_for_tools.add(MODEL)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model="default", messages=QUESTION, tools=[WEATHER], stream=stream
        )
    assert f"model {MODEL} was not trained for tool use" in str(caught.value)
    assert upstream.chat_requests == []
    # Without tools the same model answers.
    reply = await sdk.chat.completions.create(model="default", messages=QUESTION)
    assert reply.choices[0].finish_reason == "stop"


async def test_none_answers_with_text(sdk: openai.AsyncOpenAI) -> None:
    reply = await sdk.chat.completions.create(
        model="default", messages=QUESTION, tools=[WEATHER], tool_choice="none"
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_tool_call_from_upstream_is_a_502(
    sdk: openai.AsyncOpenAI, upstream: StandInServer, stream: bool
) -> None:
    invalid = {"name": "not a name!", "arguments": "{}"}
    upstream.reply_raw_tool_calls([{"id": "call_1", "type": "function", "function": invalid}])

    async def call() -> None:
        reply = await sdk.chat.completions.create(
            model="default", messages=QUESTION, tools=[WEATHER], stream=stream
        )
        if stream:
            async for _ in reply:  # type: ignore[union-attr]
                pass

    with pytest.raises(openai.APIError) as caught:  # a status before the stream, else an event
        await call()
    if not stream:
        assert isinstance(caught.value, openai.APIStatusError)
        assert caught.value.status_code == 502
    assert "malformed tool call" in str(caught.value)
    assert "names no valid function" in str(caught.value)


async def test_a_streamed_tool_call_without_index_is_read_by_its_position(
    sdk: openai.AsyncOpenAI, upstream: StandInServer
) -> None:
    function = {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    upstream.reply_raw_tool_calls([{"id": "call_9", "type": "function", "function": function}])
    text, calls, finish = await _stream_turn(sdk, "default", QUESTION)
    assert (text, finish) == ("", "tool_calls")
    assert calls == [{"id": "call_9", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "calls",
    [
        [{"function": {"name": "get_weather", "arguments": ["not", "an", "object"]}}],
        [{"function": {"arguments": {}}}],
        "not a list",
    ],
)
async def test_malformed_tool_call_from_ollama_is_a_502(
    sdk: openai.AsyncOpenAI, ollama_upstream: OllamaStandIn, stream: bool, calls: Any
) -> None:
    ollama_upstream.reply_tool_calls(calls)

    async def call() -> None:
        reply = await sdk.chat.completions.create(
            model="ollama/", messages=QUESTION, tools=[WEATHER], stream=stream
        )
        if stream:
            async for _ in reply:  # type: ignore[union-attr]
                pass

    with pytest.raises(openai.APIError) as caught:
        await call()
    if not stream:
        assert isinstance(caught.value, openai.APIStatusError)
        assert caught.value.status_code == 502
    assert "Ollama" in str(caught.value)
    assert "malformed tool call" in str(caught.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_tool_use_from_bedrock_is_a_502(
    sdk: openai.AsyncOpenAI, bedrock_upstream: BedrockStandIn, stream: bool
) -> None:
    bedrock_upstream.reply_tool({"city": "Paris"}, name="not a valid name!")

    async def call() -> None:
        reply = await sdk.chat.completions.create(
            model="bedrock/", messages=QUESTION, tools=[WEATHER], stream=stream
        )
        if stream:
            async for _ in reply:  # type: ignore[union-attr]
                pass

    with pytest.raises(openai.APIError) as caught:
        await call()
    if not stream:
        assert isinstance(caught.value, openai.APIStatusError)
        assert caught.value.status_code == 502
    assert "AWS Bedrock" in str(caught.value)
    assert "malformed tool call (toolUse 0 names no valid function)" in str(caught.value)


# ── what the facade refuses ─────────────────────────────────────────────────────


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def _tools(count: int) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}}
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"tools": _tools(129)}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "name"),
        ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "name"),
        ({"tools": [{"type": "function", "function": {"name": "a\r\nb"}}]}, "name"),
        ({"tools": [{"type": "retrieval"}]}, "type"),
        ({"tools": _tools(1) * 2}, "same function name"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": _tools(1), "tool_choice": "always"}, "tool_choice"),
        (
            {"tools": _tools(1), "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "not among `tools`",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "description": "d" * 10**5}}
                ]
            },
            "description",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"$ref": "https://example.com/schema.json"},
                        },
                    }
                ]
            },
            "tools.0.function.parameters",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "string", "pattern": "(?<=x)y"},
                        },
                    }
                ]
            },
            "tools.0.function.parameters",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": _deep(100)}}]},
            "tools.0.function.parameters: the schema nests deeper",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        (
            {"messages": [{"role": "tool", "content": "x", "tool_call_id": "a\nb"}]},
            "tool_call_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "function": {"name": "f", "arguments": "x" * 300_000}}
                        ],
                    }
                ]
            },
            "arguments",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "tool_calls",
        ),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tools": _tools(1), "parallel_tool_calls": False}, "parallel_tool_calls: false"),
    ],
)
async def test_hostile_tool_requests_are_refused(
    client: httpx.AsyncClient,
    sdk: openai.AsyncOpenAI,
    api_key: str,
    upstream: StandInServer,
    body: dict[str, Any],
    names: str,
) -> None:
    request = {"model": "default", "messages": QUESTION, **body}
    for _ in range(2):  # the second time, a remembered verdict
        response = await client.post(
            "/v1/chat/completions", json=request, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert response.status_code == 400, response.text
        assert names in response.json()["error"]["message"]
    assert upstream.chat_requests == []
