"""The stand-in upstream is faithful to LM Studio / OpenAI on the wire, and scriptable.

Clients are the ones the backend uses: the official ``openai`` SDK and httpx.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import orjson
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field

from tests.upstream import StandInServer, split_tokens, unused_url, wire
from tests.upstream.server import RecordedRequest

MODEL = "llama-3.2-3b-instruct"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello  there, stand-in!"}]
ECHO = "Echo: Hello  there, stand-in!"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def srv() -> Iterator[StandInServer]:
    """One default server for the module; reset before every test."""
    with StandInServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(srv: StandInServer) -> None:
    srv.reset()


@pytest.fixture
async def client(srv: StandInServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="lm-studio", max_retries=0) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as h:
        yield h


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": HELLO, **extra}


async def post_chat(http: httpx.AsyncClient, server: StandInServer, **extra: Any) -> httpx.Response:
    return await http.post(f"{server.base_url}/chat/completions", json=chat_body(**extra))


async def collect(stream: openai.AsyncStream[Any]) -> list[Any]:
    return [chunk async for chunk in stream]


async def raw_events(http: httpx.AsyncClient, server: StandInServer, **extra: Any) -> list[str]:
    """The ``data:`` payloads of a streamed answer, read straight off the socket."""
    body = chat_body(stream=True, **extra)
    async with http.stream("POST", f"{server.base_url}/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        text = (await r.aread()).decode()
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


# ── models ───────────────────────────────────────────────────────────────────────────


async def test_models_list_is_lm_studios_exact_body(
    srv: StandInServer, http: httpx.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    response = await http.get(f"{srv.base_url}/models")
    assert response.status_code == 200
    assert response.json() == {
        "data": [
            {"id": m, "object": "model", "owned_by": "organization_owner"}
            for m in ("llama-3.2-3b-instruct", "mistral-7b-instruct", "codellama-7b")
        ],
        "object": "list",
    }
    assert (await client.models.list()).data[0].id == MODEL


async def test_models_list_shows_loaded_models_only_unless_jit(
    srv: StandInServer, client: openai.AsyncOpenAI
) -> None:
    srv.set_loaded(["codellama-7b"])
    assert [m.id for m in (await client.models.list()).data] == ["codellama-7b"]
    srv.no_models_loaded()
    assert (await client.models.list()).data == []
    with StandInServer(loaded=[], jit=True) as jit:
        async with openai.AsyncOpenAI(base_url=jit.base_url, api_key="x") as c:
            assert len((await c.models.list()).data) == 3
            await c.chat.completions.create(model="codellama-7b", messages=HELLO)
        async with httpx.AsyncClient() as h:
            native = (await h.get(f"{jit.root_url}/api/v0/models")).json()["data"]
    assert {m["id"]: m["state"] for m in native}["codellama-7b"] == "loaded"  # loaded on demand


async def test_native_models_have_lm_studio_fields(
    srv: StandInServer, http: httpx.AsyncClient
) -> None:
    srv.set_models(
        ["qwen2-vl-7b-instruct", "lmstudio-community/meta-llama-3.1-8b-instruct", "nomic-embed"],
        loaded=["nomic-embed"],
    )
    body = (await http.get(f"{srv.root_url}/api/v0/models")).json()
    assert body["object"] == "list"
    vlm, llm, embed = body["data"]
    assert set(llm) == {
        "id",
        "object",
        "type",
        "publisher",
        "arch",
        "compatibility_type",
        "quantization",
        "state",
        "max_context_length",
        "capabilities",
    }
    assert (llm["capabilities"], embed["capabilities"]) == (["tool_use"], [])
    assert (vlm["type"], vlm["arch"], vlm["state"]) == ("vlm", "qwen2_vl", "not-loaded")
    assert (llm["type"], llm["publisher"], llm["arch"]) == ("llm", "lmstudio-community", "llama")
    assert (embed["type"], embed["state"]) == ("embeddings", "loaded")
    assert isinstance(llm["max_context_length"], int)
    one = await http.get(f"{srv.root_url}/api/v0/models/nomic-embed")
    assert one.json() == embed


async def test_native_api_can_be_switched_off(http: httpx.AsyncClient) -> None:
    with StandInServer(native_api=False) as plain:
        response = await http.get(f"{plain.root_url}/api/v0/models")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /api/v0/models)"


async def test_unknown_route_is_200_in_lm_studio_and_404_in_openai(
    srv: StandInServer, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{srv.root_url}/models")  # a base URL without /v1
    assert response.status_code == 200
    assert response.json() == {"error": "Unexpected endpoint or method. (GET /models)"}
    with StandInServer(error_style="openai") as oai:
        response = await http.post(f"{oai.root_url}/v2/nothing")
    assert response.status_code == 404
    assert response.json() == wire.openai_error("Invalid URL (POST /v2/nothing)")


# ── chat completions ─────────────────────────────────────────────────────────────────


async def test_non_stream_reply_echoes_the_last_user_message(
    srv: StandInServer, client: openai.AsyncOpenAI
) -> None:
    messages: Any = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    completion = await client.chat.completions.create(model=MODEL, messages=messages)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert completion.system_fingerprint == MODEL
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "stop", None)
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: second"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 2


async def test_stream_deltas_add_up_to_the_non_stream_text(client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model=MODEL, messages=HELLO)
    chunks = await collect(
        await client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert plain.choices[0].message.content == ECHO
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks[:-1] if c.choices]
    assert [t for t in texts if t] == split_tokens(ECHO)  # one word per chunk
    assert "".join(t or "" for t in texts) == ECHO
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage


async def test_raw_stream_ends_with_done(srv: StandInServer, http: httpx.AsyncClient) -> None:
    events = await raw_events(http, srv)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert list(chunks[0]) == ["id", "object", "created", "model", "system_fingerprint", "choices"]
    assert chunks[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": "Echo:"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage


async def test_openai_style_stream_opens_with_a_role_only_delta(http: httpx.AsyncClient) -> None:
    with StandInServer(error_style="openai") as oai:
        events = await raw_events(http, oai, stream_options={"include_usage": True})
    first, second = (orjson.loads(e)["choices"][0]["delta"] for e in events[:2])
    assert first == {"role": "assistant", "content": "", "refusal": None}
    assert second == {"content": "Echo:"}
    assert orjson.loads(events[-2])["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_cuts_the_reply(client: openai.AsyncOpenAI, stream: bool) -> None:
    if stream:
        chunks = await collect(
            await client.chat.completions.create(
                model=MODEL,
                messages=HELLO,
                max_tokens=2,
                stream=True,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=2,
        )
        text, finish = (
            completion.choices[0].message.content or "",
            completion.choices[0].finish_reason,
        )
    assert (text, finish) == ("Echo: Hello", "length")


async def test_missing_model_uses_the_first_loaded_one(
    srv: StandInServer, http: httpx.AsyncClient
) -> None:
    srv.set_loaded(["mistral-7b-instruct"])
    response = await http.post(f"{srv.base_url}/chat/completions", json={"messages": HELLO})
    assert response.json()["model"] == "mistral-7b-instruct"


async def test_native_chat_endpoint_reports_stats(
    srv: StandInServer, http: httpx.AsyncClient
) -> None:
    body = (await http.post(f"{srv.root_url}/api/v0/chat/completions", json=chat_body())).json()
    assert body["choices"][0]["message"]["content"] == ECHO
    assert body["stats"]["stop_reason"] == "eosFound"
    assert {"model_info", "runtime"} <= set(body)


async def test_bad_request_bodies(srv: StandInServer, http: httpx.AsyncClient) -> None:
    url = f"{srv.base_url}/chat/completions"
    not_json = await http.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
    no_messages = await http.post(url, json={"model": MODEL})
    assert (not_json.status_code, no_messages.status_code) == (400, 400)
    assert isinstance(not_json.json()["error"], str)


# ── structured output ────────────────────────────────────────────────────────────────


class Priority(StrEnum):
    LOW = "low"
    HIGH = "high"


class Step(BaseModel):
    title: str = Field(min_length=3, max_length=20)
    minutes: int = Field(ge=1, le=90)


class Plan(BaseModel):
    name: str
    priority: Priority
    steps: list[Step] = Field(min_length=2)
    confidence: float = Field(gt=0, lt=1)
    owner: str | None
    notes: str | None = None
    tags: list[str] = []
    done: bool = False


class Flat(BaseModel):
    answer: str
    score: int = Field(gt=0, le=10)


class Nested(BaseModel):
    flat: Flat
    history: list[Flat]
    maybe: Flat | None


@pytest.mark.parametrize("model", [Plan, Flat, Nested])
async def test_json_schema_replies_validate_against_the_schema(
    client: openai.AsyncOpenAI, model: type[BaseModel]
) -> None:
    schema = model.model_json_schema()
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": model.__name__, "strict": True, "schema": schema},
        },
    )
    content = completion.choices[0].message.content or ""
    jsonschema.validate(orjson.loads(content), schema)
    model.model_validate_json(content)


async def test_sdk_parse_with_a_pydantic_model_works(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.parse(
        model=MODEL,
        messages=HELLO,
        response_format=Plan,
    )
    plan = completion.choices[0].message.parsed
    assert isinstance(plan, Plan)
    assert plan.priority is Priority.LOW
    assert len(plan.steps) == 2


async def test_streamed_json_schema_reply_is_the_same_json(client: openai.AsyncOpenAI) -> None:
    fmt: Any = {
        "type": "json_schema",
        "json_schema": {"name": "Flat", "schema": Flat.model_json_schema()},
    }
    plain = await client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        response_format=fmt,
    )
    chunks = await collect(
        await client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            response_format=fmt,
            stream=True,
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == plain.choices[0].message.content
    assert len(chunks) > 3


async def test_json_object_is_rejected_exactly_like_lm_studio(
    srv: StandInServer, http: httpx.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    response = await post_chat(http, srv, response_format={"type": "json_object"})
    assert response.status_code == 400
    assert (
        response.content
        == b"{\"error\":\"'response_format.type' must be 'json_schema' or 'text'\"}"
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            response_format={"type": "json_object"},
        )
    assert caught.value.body == wire.LMSTUDIO_RESPONSE_FORMAT_ERROR  # the SDK unwraps "error"


async def test_json_object_is_answered_when_supported(http: httpx.AsyncClient) -> None:
    with StandInServer(error_style="openai", json_object_supported=True) as oai:
        response = await post_chat(http, oai, response_format={"type": "json_object"})
    content = response.json()["choices"][0]["message"]["content"]
    assert orjson.loads(content) == {"echo": "Hello  there, stand-in!"}


async def test_text_format_is_fine_and_json_schema_can_be_unsupported(
    srv: StandInServer, http: httpx.AsyncClient
) -> None:
    ok = await post_chat(http, srv, response_format={"type": "text"})
    assert ok.json()["choices"][0]["message"]["content"] == ECHO
    with StandInServer(json_schema_supported=False) as old:
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
        refused = await post_chat(http, old, response_format=fmt)
    assert refused.status_code == 400


# ── LM Studio's model errors ─────────────────────────────────────────────────────────


async def test_no_models_loaded_is_lm_studios_404(
    srv: StandInServer, http: httpx.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    srv.no_models_loaded()
    response = await post_chat(http, srv)
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "No models loaded. Please load a model in the developer page or use "
            "the `lms load` command.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    with pytest.raises(openai.NotFoundError, match="No models loaded"):
        await client.chat.completions.create(model=MODEL, messages=HELLO)


async def test_unknown_model_is_lm_studios_404(srv: StandInServer, http: httpx.AsyncClient) -> None:
    srv.set_loaded([MODEL, "codellama-7b"])
    response = await http.post(
        f"{srv.base_url}/chat/completions", json={"model": "gpt-4o", "messages": HELLO}
    )
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": 'Model "gpt-4o" not found. Please specify a valid model.\n\n'
        "Your models:\n\nllama-3.2-3b-instruct\ncodellama-7b",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


async def test_lm_studio_0_4_wording(http: httpx.AsyncClient) -> None:
    with StandInServer(lmstudio_version="0.4") as new:
        unknown = await http.post(
            f"{new.base_url}/chat/completions", json={"model": "o4-mini", "messages": HELLO}
        )
        new.no_models_loaded()
        empty = await post_chat(http, new)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == (
        'Invalid model identifier "o4-mini". Please specify a valid downloaded model (e.g., '
        "llama-3.2-3b-instruct, mistral-7b-instruct, codellama-7b)."
    )
    assert empty.status_code == 400
    assert (
        empty.json()["error"]
        == wire.openai_error(wire.LMSTUDIO_NO_MODELS_LOADED_V04, param="model")["error"]
    )


async def test_openai_style_model_errors(http: httpx.AsyncClient) -> None:
    with StandInServer(error_style="openai") as oai:
        async with openai.AsyncOpenAI(base_url=oai.base_url, api_key="k", max_retries=0) as c:
            with pytest.raises(openai.NotFoundError) as caught:
                await c.chat.completions.create(model="gpt-9", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert caught.value.message.endswith(
        "The model `gpt-9` does not exist or you do not have access to it."
    )


# ── authentication ───────────────────────────────────────────────────────────────────


async def test_api_key_is_enforced_like_lm_studio(http: httpx.AsyncClient) -> None:
    with StandInServer(api_key="sk-lm-secret") as locked:
        missing = await http.get(f"{locked.base_url}/models")
        wrong = await http.get(
            f"{locked.base_url}/models", headers={"Authorization": "Bearer 22aac52a71ffffff"}
        )
        right = await http.get(
            f"{locked.base_url}/models", headers={"Authorization": "Bearer sk-lm-secret"}
        )
        async with openai.AsyncOpenAI(base_url=locked.base_url, api_key="nope") as c:
            with pytest.raises(openai.AuthenticationError):
                await c.models.list()
        recorded = locked.requests
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json() == wire.lmstudio_auth_error(wire.LMSTUDIO_TOKEN_REQUIRED)
    assert wrong.json()["error"]["message"] == (
        "Malformed LM Studio API token provided: 22aac52a71... Ensure you are using a valid token."
    )
    assert recorded[-1].headers["authorization"] == "Bearer nope"  # refused ones are recorded


async def test_api_key_is_enforced_like_openai(http: httpx.AsyncClient) -> None:
    with StandInServer(api_key="sk-right-key-123", error_style="openai") as locked:
        missing = await post_chat(http, locked)
        wrong = await http.post(
            f"{locked.base_url}/chat/completions",
            json=chat_body(),
            headers={"Authorization": "Bearer sk-wrong-key-456"},
        )
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key.")
    assert wrong.json()["error"] == {
        "message": "Incorrect API key provided: sk-*********-456. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


# ── scripts ──────────────────────────────────────────────────────────────────────────


async def test_scripts_are_used_in_order_then_defaults_resume(
    srv: StandInServer, client: openai.AsyncOpenAI
) -> None:
    srv.reply("one")
    srv.reply("two", times=2)
    texts = []
    for _ in range(4):
        completion = await client.chat.completions.create(model=MODEL, messages=HELLO)
        texts.append(completion.choices[0].message.content)
    assert texts == ["one", "two", "two", ECHO]
    assert srv.scripts_pending == 0


async def test_reply_reasoning(srv: StandInServer, client: openai.AsyncOpenAI) -> None:
    srv.reply_reasoning("Let me think about it.", times=2)
    completion = await client.chat.completions.create(model=MODEL, messages=HELLO)
    message = completion.choices[0].message
    assert message.content == ""
    assert getattr(message, "reasoning_content", None) == "Let me think about it."
    chunks = await collect(
        await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    )
    thoughts = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks)
    assert thoughts == "Let me think about it."
    assert all(not c.choices[0].delta.content for c in chunks)


async def test_reply_json_and_reply_truncated(
    srv: StandInServer, client: openai.AsyncOpenAI
) -> None:
    srv.reply_json({"a": [1, 2], "b": "é"})
    srv.reply_json('{"raw": true')
    srv.reply_truncated("cut off mid")
    answers = [
        (await client.chat.completions.create(model=MODEL, messages=HELLO)).choices[0]
        for _ in range(3)
    ]
    assert orjson.loads(answers[0].message.content or "") == {"a": [1, 2], "b": "é"}
    assert answers[1].message.content == '{"raw": true'
    assert (answers[2].message.content, answers[2].finish_reason) == ("cut off mid", "length")


async def test_fail_uses_the_error_style_and_route(
    srv: StandInServer, http: httpx.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    srv.fail(503, route="models")
    srv.fail(429, headers={"Retry-After": "7"})
    srv.fail(500, {"error": {"message": "custom"}})
    srv.fail(502, "plain text")
    models = await http.get(f"{srv.base_url}/models")
    assert (models.status_code, models.json()) == (
        503,
        {"error": wire.STANDIN_FAILURE.format(status=503)},
    )
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.InternalServerError, match="custom"):
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    plain = await post_chat(http, srv)
    assert (plain.status_code, plain.text) == (502, "plain text")
    assert (await post_chat(http, srv)).status_code == 200
    with StandInServer(error_style="openai") as oai:
        oai.fail(500)
        body = (await post_chat(http, oai)).json()
    assert body == wire.openai_error(wire.OPENAI_SERVER_ERROR, "server_error")


async def test_fail_forever_until_reset(srv: StandInServer, http: httpx.AsyncClient) -> None:
    srv.fail(500, times=None)
    statuses = [(await post_chat(http, srv)).status_code for _ in range(3)]
    srv.reset()
    statuses.append((await post_chat(http, srv)).status_code)
    assert statuses == [500, 500, 500, 200]


async def test_garbage(
    srv: StandInServer, http: httpx.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    srv.garbage(times=3)
    response = await post_chat(http, srv)
    assert response.status_code == 200
    assert response.text == "<html><body>502 Bad Gateway</body></html>"
    # The SDK lets the decoding error through: it is no openai.APIError.
    with pytest.raises(json.JSONDecodeError):
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    with pytest.raises(json.JSONDecodeError):
        await collect(
            await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        )


async def test_delay_holds_one_request_without_blocking_others(
    srv: StandInServer, client: openai.AsyncOpenAI
) -> None:
    srv.delay(0.6)
    started = time.monotonic()
    slow = asyncio.create_task(client.chat.completions.create(model=MODEL, messages=HELLO))
    await srv.wait_for_requests_async(1)
    fast = await client.chat.completions.create(model=MODEL, messages=HELLO)
    fast_done = time.monotonic() - started
    assert (await slow).choices[0].message.content == ECHO
    assert fast.choices[0].message.content == ECHO
    assert fast_done < 0.4 <= time.monotonic() - started


async def test_delay_makes_a_client_time_out(srv: StandInServer) -> None:
    srv.delay(2)
    async with openai.AsyncOpenAI(
        base_url=srv.base_url, api_key="x", max_retries=0, timeout=0.2
    ) as impatient:
        with pytest.raises(openai.APITimeoutError):
            await impatient.chat.completions.create(model=MODEL, messages=HELLO)
    assert await srv.wait_for_disconnect_async(1.0)  # the abandoned request is noticed


async def test_stream_cut_aborts_without_done(
    srv: StandInServer, http: httpx.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    srv.stream_cut(after_chunks=2)
    received: list[str] = []

    async def read_all() -> None:
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIConnectionError):
        await read_all()
    assert received == ["Echo:", " Hello"]
    srv.stream_cut()
    with pytest.raises(httpx.RemoteProtocolError):
        await post_chat(http, srv)
    assert srv.disconnects == 0  # the server's own cuts are not client disconnects


async def test_slow_stream_paces_tokens(srv: StandInServer, client: openai.AsyncOpenAI) -> None:
    srv.slow_stream(n_chunks=6, interval=0.05)
    started = time.monotonic()
    chunks = await collect(
        await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    )
    elapsed = time.monotonic() - started
    tokens = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert tokens == [*split_tokens(ECHO), " w4", " w5"]
    assert 0.25 <= elapsed < 1.5


@pytest.mark.parametrize("kind", ["prose", "truncated", "fenced", "wrong_shape"])
async def test_invalid_json_fails_the_schema(
    srv: StandInServer, client: openai.AsyncOpenAI, kind: Any
) -> None:
    schema = Plan.model_json_schema()
    srv.invalid_json(kind=kind)
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "Plan", "schema": schema}},
    )
    content = completion.choices[0].message.content or ""
    with pytest.raises((ValueError, jsonschema.ValidationError)):
        jsonschema.validate(orjson.loads(content), schema)


async def test_enqueue_runs_custom_handlers(srv: StandInServer, http: httpx.AsyncClient) -> None:
    def teapot(request: web.Request, record: RecordedRequest) -> web.Response:
        return web.json_response({"model": record.json["model"]}, status=418)

    async def later(request: web.Request, record: RecordedRequest) -> web.Response:
        await asyncio.sleep(0.01)
        return web.Response(text="async " + request.path)

    srv.enqueue(teapot)
    srv.enqueue(later, route="models")
    first = await post_chat(http, srv)
    second = await http.get(f"{srv.base_url}/models")
    assert (first.status_code, first.json()) == (418, {"model": MODEL})
    assert second.text == "async /v1/models"


# ── connections ──────────────────────────────────────────────────────────────────────


async def test_refuse_and_accept_on_the_same_port(
    srv: StandInServer, http: httpx.AsyncClient
) -> None:
    port = srv.port
    assert (await http.get(f"{srv.base_url}/models")).status_code == 200  # a pooled connection
    srv.refuse()
    assert srv.refusing
    with pytest.raises(httpx.ConnectError):
        await http.get(f"{srv.base_url}/models")
    srv.accept()
    assert srv.port == port
    assert (await http.get(f"{srv.base_url}/models")).status_code == 200


async def test_refuse_cuts_a_stream_in_flight(
    srv: StandInServer, client: openai.AsyncOpenAI
) -> None:
    srv.slow_stream(n_chunks=100, interval=0.02)
    stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    await stream.__anext__()
    srv.refuse()
    with pytest.raises(openai.APIConnectionError):
        await collect(stream)
    srv.accept()
    assert srv.disconnects == 0


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_client_disconnect_mid_stream_is_seen_quickly(
    srv: StandInServer, transport: str
) -> None:
    http_client = openai.DefaultAioHttpClient() if transport == "aiohttp" else None
    async with openai.AsyncOpenAI(
        base_url=srv.base_url, api_key="x", http_client=http_client
    ) as client:
        srv.slow_stream(n_chunks=200, interval=0.05)
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 2:
                break
        assert srv.disconnects == 0
        hung_up = time.monotonic()
        await stream.close()
        assert await srv.wait_for_disconnect_async(1.0)
    assert time.monotonic() - hung_up < 1.0
    assert srv.disconnects == 1
    assert srv.disconnect_event.is_set()


async def test_cancelling_the_consumer_task_is_a_disconnect(
    srv: StandInServer, client: openai.AsyncOpenAI
) -> None:
    srv.slow_stream(n_chunks=200, interval=0.05)

    async def consume() -> None:
        await collect(
            await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        )

    task = asyncio.create_task(consume())
    await srv.wait_for_requests_async(1)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await srv.wait_for_disconnect_async(1.0)


def test_wait_for_disconnect_blocks_in_sync_code(srv: StandInServer) -> None:
    srv.slow_stream(n_chunks=100, interval=0.05)
    with (
        httpx.Client() as h,
        h.stream("POST", f"{srv.base_url}/chat/completions", json=chat_body(stream=True)) as r,
    ):
        next(r.iter_lines())
    assert srv.wait_for_disconnect(timeout=1.0)
    assert not srv.wait_for_disconnect(timeout=0.05, count=2)


async def test_unused_url_refuses_connections(http: httpx.AsyncClient) -> None:
    url = unused_url()
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/v1")
    with pytest.raises(httpx.ConnectError):
        await http.get(f"{url}/models")


async def test_another_loopback_host_plays_a_remote(http: httpx.AsyncClient) -> None:
    with StandInServer(host="127.0.0.2") as remote:
        assert remote.base_url.startswith("http://127.0.0.2:")
        assert (await http.get(f"{remote.base_url}/models")).status_code == 200
        with socket.socket() as probe:  # nothing on 127.0.0.1 at that port
            assert probe.connect_ex(("127.0.0.1", remote.port)) != 0


# ── observability and lifecycle ──────────────────────────────────────────────────────


async def test_requests_are_recorded_in_order(
    srv: StandInServer, http: httpx.AsyncClient, client: openai.AsyncOpenAI
) -> None:
    await client.models.list()
    await client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0.2)
    await http.get(f"{srv.root_url}/api/v0/models?x=1")
    first, second, third = srv.requests
    assert (first.method, first.path, first.route) == ("GET", "/v1/models", "models")
    assert second.headers["authorization"] == "Bearer lm-studio"
    assert second.json == {"messages": HELLO, "model": MODEL, "temperature": 0.2}
    assert (third.route, third.query) == ("native_models", {"x": "1"})
    assert srv.chat_requests == [second]


async def test_reset_restores_the_defaults(srv: StandInServer, http: httpx.AsyncClient) -> None:
    srv.no_models_loaded()
    srv.fail(500)
    srv.api_key = "changed-by-a-test"
    srv.refuse()
    srv.reset()
    assert srv.api_key is None
    assert (srv.requests, srv.scripts_pending, srv.refusing) == ([], 0, False)
    assert (await post_chat(http, srv)).status_code == 200


async def test_stream_cut_never_sends_done(srv: StandInServer, http: httpx.AsyncClient) -> None:
    srv.stream_cut(after_chunks=99)
    with pytest.raises(httpx.RemoteProtocolError):
        await raw_events(http, srv)


def test_busy_port_raises_and_a_restart_keeps_the_port() -> None:
    server = StandInServer().start()
    port = server.port
    with pytest.raises(OSError, match="in use"):
        StandInServer(port=port).start()
    server.stop()
    server.start()
    try:
        assert server.port == port
        assert httpx.get(f"{server.base_url}/models").status_code == 200
    finally:
        server.stop()


def test_sync_code_can_use_it() -> None:
    with StandInServer(models=["only-one"]) as server, httpx.Client() as h:
        body = h.get(f"{server.base_url}/models").json()
        reply = h.post(
            f"{server.base_url}/chat/completions",
            json={"model": "only-one", "messages": [{"role": "user", "content": "hi"}]},
        ).json()
    assert [m["id"] for m in body["data"]] == ["only-one"]
    assert reply["choices"][0]["message"]["content"] == "Echo: hi"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/models")  # stopped means gone


async def test_stream_chunks_and_interval_options(http: httpx.AsyncClient) -> None:
    with StandInServer(stream_chunks=20, chunk_interval=0.005) as bench:
        started = time.monotonic()
        events = await raw_events(http, bench)
        elapsed = time.monotonic() - started
    assert len(events) == 20 + 2  # tokens, the finishing chunk, [DONE]
    assert elapsed >= 19 * 0.005


async def test_many_concurrent_streams(srv: StandInServer, client: openai.AsyncOpenAI) -> None:
    async def one(i: int) -> str:
        messages: Any = [{"role": "user", "content": f"request {i}"}]
        stream = await client.chat.completions.create(model=MODEL, messages=messages, stream=True)
        return "".join([c.choices[0].delta.content or "" for c in await collect(stream)])

    started = time.monotonic()
    texts = await asyncio.gather(*(one(i) for i in range(100)))
    assert texts == [f"Echo: request {i}" for i in range(100)]
    assert time.monotonic() - started < 5


def test_command_line_runs_it_in_the_foreground() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-m", "tests.upstream", "--port", "0", "--models", "a,b"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
            assert base_url.startswith("http://127.0.0.1:")
            models = httpx.get(f"{base_url}/models").json()
            assert [m["id"] for m in models["data"]] == ["a", "b"]
        finally:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
