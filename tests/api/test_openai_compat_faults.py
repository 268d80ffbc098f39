"""The /v1 facade under upstream faults, limits and bad input: every error in OpenAI's shape,
checked on the wire and through the official `openai` SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.api.llm_faults_support import (
    AFTER_TEXT,
    FAULTS,
    MODEL,
    Fault,
    Headers,
    Upstreams,
    chat_calls,
    scrape,
    sse_events,
    value,
    wait_streams_idle,
)
from tests.conftest import LLMEnv, UserFactory
from tests.upstream import StandInServer

CHAT = "/v1/chat/completions"
SDK_ERRORS: dict[int, type[openai.APIStatusError]] = {
    404: openai.NotFoundError,
    502: openai.InternalServerError,
    503: openai.InternalServerError,
    504: openai.InternalServerError,
}


pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture(scope="module")
async def api_key(client: httpx.AsyncClient, make_user: UserFactory) -> str:
    user = await make_user()
    response = await client.post("/api/v1/api-keys", json={"name": "faults"}, headers=user.headers)
    assert response.status_code == 201
    return str(response.json()["key"])


@pytest.fixture
async def sdk(app_url: str, api_key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{app_url}/v1", api_key=api_key, max_retries=0
    ) as sdk_client:
        yield sdk_client


def chat(model: str = "default", stream: bool = False, **fields: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "one two three four"}],
        "stream": stream,
        **fields,
    }


def assert_openai_error(
    response: httpx.Response,
    status: int,
    kind: str,
    code: str | None = None,
    param: str | None = None,
) -> str:
    """OpenAI's error shape with this status, type, code and param; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str)
    assert error == {"message": error["message"], "type": kind, "param": param, "code": code}
    return error["message"]


def assert_openai_error_chunk(response: httpx.Response, kind: str) -> tuple[str, str]:
    """A stream that began (200) and ended with OpenAI's in-stream error, `data: {"error":
    ...}` of this type, and no `[DONE]`; returns the text relayed before it and its message."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert {name for name, _ in events} == {"message"}
    assert "[DONE]" not in [data for _, data in events]
    error = events[-1][1]
    assert set(error) == {"error"}, error
    message = error["error"]["message"]
    assert isinstance(message, str)
    assert error["error"] == {"message": message, "type": kind, "param": None, "code": None}
    return deltas(events), message


def deltas(events: list[tuple[str, Any]]) -> str:
    return "".join(
        data["choices"][0]["delta"].get("content") or ""
        for _, data in events
        if isinstance(data, dict) and data.get("choices")
    )


async def read_text(stream: openai.AsyncStream[ChatCompletionChunk], into: list[str]) -> None:
    """Append each chunk's text to `into` (what arrived before an error stays there)."""
    async for chunk in stream:
        if chunk.choices:
            into.append(chunk.choices[0].delta.content or "")


# ── 1. every upstream fault, plain and streamed ─────────────────────────────


def _fault_cases() -> list[Any]:
    cases = []
    for fault in FAULTS:
        for stream in (False, True):
            name = "stream" if stream else "plain"
            cases.append(pytest.param(fault, stream, id=f"{fault.id}-{name}"))
    return cases


@pytest.mark.parametrize(("fault", "stream"), _fault_cases())
async def test_upstream_fault_is_an_openai_error_naming_the_upstream(
    client: httpx.AsyncClient,
    upstreams: Upstreams,
    admin_headers: Headers,
    fault: Fault,
    stream: bool,
) -> None:
    url = fault.arrange(upstreams)
    response = await client.post(
        CHAT, json=chat(f"lmstudio/{fault.model}", stream), headers=admin_headers
    )
    if fault.in_stream(stream):
        text, message = assert_openai_error_chunk(response, fault.kind)
        assert text == ""
    else:
        message = assert_openai_error(response, fault.status, fault.kind)
    assert message.startswith(fault.expected_message(url, stream)), message
    assert response.headers.get("retry-after") == fault.retry_after
    assert chat_calls(upstreams) == fault.upstream_calls


@pytest.mark.parametrize(
    ("fault", "stream"),
    [p for p in _fault_cases() if p.values[0].id != "timeout"],  # the wire test covers it
)
async def test_upstream_fault_raises_the_matching_sdk_error(
    sdk: openai.AsyncOpenAI, upstreams: Upstreams, fault: Fault, stream: bool
) -> None:
    url = fault.arrange(upstreams)

    async def call() -> None:
        reply = await sdk.chat.completions.create(
            model=fault.model,  # a bare name is a model of the configured provider
            messages=[{"role": "user", "content": "one two three"}],
            stream=stream,
        )
        if isinstance(reply, openai.AsyncStream):
            received: list[str] = []
            await read_text(reply, received)
            assert "".join(received) == ""

    with pytest.raises(openai.APIError) as caught:
        await call()
    error = caught.value
    if fault.in_stream(stream):
        # The SDK raises the in-stream error from the iterator, without a status (200).
        assert type(error) is openai.APIError
        body = {"message": error.message, "type": fault.kind, "param": None, "code": None}
        assert error.body == body
    else:
        assert isinstance(error, openai.APIStatusError)
        assert type(error) is SDK_ERRORS[fault.status]
        assert error.status_code == fault.status
    assert error.type == fault.kind
    assert isinstance(error.body, dict)
    # The API key is an ordinary user's: no upstream address in what it is told.
    assert error.body["message"].startswith(fault.expected_message(url, stream, admin=False))
    assert url not in error.body["message"]
    assert chat_calls(upstreams) == fault.upstream_calls


# ── faults after the first text: a `data: {"error": ...}` chunk, no [DONE] ──


@pytest.mark.parametrize(("arrange", "text", "message"), AFTER_TEXT)
async def test_stream_fault_after_text_is_an_error_chunk(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    arrange: Callable[[StandInServer], None],
    text: str,
    message: str,
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=2)
    arrange(upstream)
    response = await client.post(CHAT, json=chat(stream=True), headers=admin_headers)
    relayed, error = assert_openai_error_chunk(response, "llm_upstream_error")
    assert relayed == text
    assert error.startswith(message.format(url=upstream.base_url)), error
    assert len(upstream.chat_requests) == 1  # text was sent: a retry would repeat it


@pytest.mark.parametrize(("arrange", "text", "message"), AFTER_TEXT)
async def test_stream_fault_after_text_raises_an_sdk_api_error(
    sdk: openai.AsyncOpenAI,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    arrange: Callable[[StandInServer], None],
    text: str,
    message: str,
) -> None:
    arrange(upstream)
    stream = await sdk.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "one two three"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        await read_text(stream, received)
    error = caught.value
    assert not isinstance(error, openai.APIStatusError)  # the HTTP status was 200
    assert "".join(received) == text
    assert error.message.startswith(message.format(url=upstream.base_url))
    assert error.type == "llm_upstream_error"
    assert error.body == {"message": error.message, "type": error.type, "param": None, "code": None}


async def test_stream_timeout_after_text_is_an_error_chunk(
    sdk: openai.AsyncOpenAI, llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_timeout=1, lmstudio_max_retries=2)
    upstream.slow_stream(n_chunks=3, interval=1.6)
    stream = await sdk.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        await read_text(stream, received)
    assert "".join(received) == "Echo:"
    assert caught.value.type == "llm_timeout_error"
    assert caught.value.message.startswith(f"LM Studio did not answer within 1 s (model {MODEL}).")
    assert len(upstream.chat_requests) == 1


# ── 2. a client that goes away closes the upstream stream ───────────────────


async def test_client_disconnect_closes_the_upstream_stream(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    await wait_streams_idle(client)
    before = await scrape(client)
    upstream.slow_stream(n_chunks=200, interval=0.05)
    async with client.stream("POST", CHAT, json=chat(stream=True), headers=admin_headers) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                break
    assert await upstream.wait_for_disconnect_async(timeout=1.0)
    await wait_streams_idle(client, timeout=1.0)
    after = await scrape(client)
    labels = {"provider": "lmstudio", "model": MODEL, "kind": "stream", "outcome": "cancelled"}
    assert (
        value(after, "llm_requests_total", **labels) - value(before, "llm_requests_total", **labels)
        == 1
    )


async def test_sdk_closing_a_stream_closes_the_upstream_stream(
    sdk: openai.AsyncOpenAI, llm_no_retries: LLMEnv, upstream: StandInServer
) -> None:
    upstream.slow_stream(n_chunks=200, interval=0.05)
    stream = await sdk.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "x"}], stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    assert await upstream.wait_for_disconnect_async(timeout=1.0)


# ── 3. limits and bad input ─────────────────────────────────────────────────


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_over_the_cap_is_400_and_the_cap_itself_passes(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    stream: bool,
    field: str,
) -> None:
    llm_no_retries.set(lmstudio_model=MODEL, llm_max_tokens=100)
    over = await client.post(CHAT, json={**chat(stream=stream), field: 101}, headers=admin_headers)
    message = assert_openai_error(over, 400, "invalid_request_error", "max_tokens_too_large")
    assert message == "max_tokens must be at most 100"
    assert upstream.chat_requests == []
    at_cap = await client.post(
        CHAT, json={**chat(stream=stream), field: 100}, headers=admin_headers
    )
    assert at_cap.status_code == 200, at_cap.text
    assert upstream.chat_requests[0].json["max_tokens"] == 100


async def test_max_tokens_over_the_cap_raises_sdk_bad_request(
    sdk: openai.AsyncOpenAI, llm_no_retries: LLMEnv
) -> None:
    llm_no_retries.set(lmstudio_model=MODEL, llm_max_tokens=100)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], max_tokens=101
        )
    assert caught.value.code == "max_tokens_too_large"


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "default", "messages": []}, "messages: List should have at least 1 item"),
        ({"model": "default"}, "messages: Field required"),
        (
            {"messages": [{"role": "wizard", "content": "x"}]},
            "messages.0.role: Input should be 'system', 'user', 'assistant', 'tool' or 'developer'",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature: Input should be less than or equal to 2",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens: Input should be greater than or equal to 1",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "response_format": {}},
            "response_format: Unable to extract tag using discriminator 'type'",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
            "response_format: Input tag 'xml' found using 'type' does not match any of the "
            "expected tags: 'text', 'json_object', 'json_schema'",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema"},
            },
            "response_format.json_schema: Field required",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"schema": {}}},
            },
            "response_format.json_schema.name: Field required",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "deep", "schema": _nested(40)},
                },
            },
            "response_format.json_schema.schema: Value error, the schema nests deeper than 32 "
            "levels",
        ),
        (
            {"model": "x" * 100_000, "messages": [{"role": "user", "content": "x"}]},
            "model: String should have at most 200 characters",
        ),
        (
            {"model": "evil\r\nINFO forged", "messages": [{"role": "user", "content": "x"}]},
            "model: Value error, must not contain control characters",
        ),
    ],
    ids=[
        "no_messages",
        "messages_missing",
        "bad_role",
        "temperature",
        "max_tokens_zero",
        "response_format_empty",
        "response_format_unknown_type",
        "json_schema_missing",
        "json_schema_without_name",
        "json_schema_too_deep",
        "model_too_long",
        "model_with_crlf",
    ],
)
async def test_bad_request_is_400_in_openai_shape(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    body: dict[str, Any],
    message: str,
) -> None:
    response = await client.post(CHAT, json=body, headers=admin_headers)
    param = message.partition(":")[0]
    text = assert_openai_error(response, 400, "invalid_request_error", param=param)
    assert text.startswith(message), text
    assert upstream.chat_requests == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"messages": [', "The request body is not valid JSON (Expecting value at character 14)"),
        (b"hello", "The request body is not valid JSON (Expecting value at character 0)"),
        (b'["hello"]', "request body: Input should be a valid dictionary"),
        (b"", "request body: Field required"),
    ],
    ids=["truncated", "not_json", "not_an_object", "empty"],
)
async def test_body_that_is_not_a_json_object_is_400_in_openai_shape(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    content: bytes,
    message: str,
) -> None:
    response = await client.post(
        CHAT, content=content, headers={**admin_headers, "content-type": "application/json"}
    )
    text = assert_openai_error(response, 400, "invalid_request_error")
    assert text.startswith(message), text
    assert upstream.chat_requests == []


async def test_unknown_openai_fields_are_ignored(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    response = await client.post(
        CHAT,
        json=chat(frequency_penalty=0.5, user="someone", logit_bias={"1": 2}),
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    sent = upstream.chat_requests[0].json
    assert not {"frequency_penalty", "user", "logit_bias"} & set(sent)


@pytest.mark.parametrize(
    ("model", "status", "kind", "message"),
    [
        (
            "lmstuido/" + MODEL,  # not a provider: the whole name is an LM Studio model
            404,
            "llm_model_not_found",
            f"Model 'lmstuido/{MODEL}' is not available on LM Studio at {{url}} (",
        ),
        (
            "openai/gpt-4o-mini",  # a provider without its API key
            400,
            "llm_configuration_error",
            "OPENAI_API_KEY is not set: the openai provider cannot be used until it is",
        ),
    ],
    ids=["unknown_provider_prefix", "unconfigured_provider"],
)
async def test_model_naming_an_unusable_provider_is_an_openai_error(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    model: str,
    status: int,
    kind: str,
    message: str,
) -> None:
    response = await client.post(CHAT, json=chat(model), headers=admin_headers)
    text = assert_openai_error(response, status, kind)
    assert text.startswith(message.format(url=upstream.base_url)), text


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
async def test_body_over_max_request_bytes_is_413_in_openai_shape(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    chunked: bool,
) -> None:
    limit = llm_no_retries.original.max_request_bytes
    body = b"x" * (limit + 1)
    content: bytes | AsyncIterator[bytes] = body
    if chunked:

        async def parts() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 65_536):
                yield body[start : start + 65_536]

        content = parts()
    response = await client.post(
        CHAT, content=content, headers={**admin_headers, "content-type": "application/json"}
    )
    assert ("content-length" not in response.request.headers) is chunked
    message = assert_openai_error(response, 413, "invalid_request_error")
    assert message == f"Request body is larger than {limit} bytes (MAX_REQUEST_BYTES)"
    assert upstream.chat_requests == []


async def test_concurrency_limit_is_429_with_retry_after_then_frees_up(
    client: httpx.AsyncClient,
    sdk: openai.AsyncOpenAI,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    llm_env.set(lmstudio_model=MODEL, llm_max_concurrency=1, llm_queue_timeout=0.3)
    upstream.slow_stream(n_chunks=12, interval=0.05)
    async with client.stream("POST", CHAT, json=chat(stream=True), headers=admin_headers) as held:
        lines = held.aiter_lines()
        async for line in lines:
            if line.startswith("data:"):
                break  # the first request has its slot and is streaming

        async def via_sdk() -> openai.RateLimitError:
            with pytest.raises(openai.RateLimitError) as caught:
                await sdk.chat.completions.create(
                    model="default", messages=[{"role": "user", "content": "x"}]
                )
            return caught.value

        plain, streamed, sdk_error = await asyncio.gather(
            client.post(CHAT, json=chat(), headers=admin_headers),
            client.post(CHAT, json=chat(stream=True), headers=admin_headers),
            via_sdk(),
        )
        rest = "".join([line async for line in lines])
    expected = (
        f"LM Studio at {upstream.base_url} is busy: 1 requests are running and this one "
        "waited 0.3 s for a turn; try again shortly or raise LLM_MAX_CONCURRENCY"
    )
    for response in (plain, streamed):
        assert assert_openai_error(response, 429, "llm_overloaded") == expected
        assert response.headers["retry-after"] == "1"
    assert sdk_error.type == "llm_overloaded"
    assert sdk_error.response.headers["retry-after"] == "1"
    assert "data: [DONE]" in rest  # the first request was not disturbed
    assert len(upstream.chat_requests) == 1
    after = await client.post(CHAT, json=chat(), headers=admin_headers)
    assert after.status_code == 200, after.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/v1/models", None), ("POST", CHAT, chat()), ("POST", CHAT, chat(stream=True))],
    ids=["models", "chat", "chat_stream"],
)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Not authenticated"),
        ({"Authorization": "Bearer lmb_not-a-key"}, "Invalid or revoked API key"),
    ],
    ids=["no_credentials", "bad_key"],
)
async def test_unauthenticated_is_401_in_openai_shape(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: Headers,
    message: str,
) -> None:
    response = await client.request(method, path, json=body, headers=headers)
    assert assert_openai_error(response, 401, "authentication_error") == message
    assert response.headers["www-authenticate"] == "Bearer"
    assert upstream.requests == []
