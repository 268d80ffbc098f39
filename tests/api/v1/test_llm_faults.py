"""/api/v1/llm under upstream faults, limits and bad input, over real HTTP against the
stand-in LM Studio; and the Prometheus metrics those calls leave behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

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
from tests.conftest import LLMEnv
from tests.upstream import StandInServer

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}
NOT_JSON = "I'm sorry, but I can't provide that in JSON right now."  # the stand-in's prose


pytestmark = pytest.mark.usefixtures("no_server_errors")


@dataclass(frozen=True)
class Endpoint:
    name: str
    extra: Callable[[], dict[str, Any]]  # what the body needs besides the prompt

    @property
    def path(self) -> str:
        return f"/api/v1/llm/{self.name}"

    @property
    def stream(self) -> bool:
        return self.name == "stream"

    def body(self, prompt: str = "one two three four", **fields: Any) -> dict[str, Any]:
        return {"prompt": prompt, **self.extra(), **fields}


ENDPOINTS = [
    Endpoint("generate", dict),
    Endpoint("structured", lambda: {"schema": SCHEMA}),
    Endpoint("stream", dict),
]
each_endpoint = pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)


def assert_error(response: httpx.Response, status: int, kind: str) -> str:
    """Our error shape with this status and type; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail", "type"}, body
    assert body["type"] == kind
    assert isinstance(body["detail"], str)
    return body["detail"]


def assert_error_event(response: httpx.Response, kind: str) -> tuple[str, str]:
    """A stream that began (200): `delta` events, then an `error` event of this type (and no
    `done`); returns the text relayed before the error and its message."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == ["delta"] * (len(names) - 1) + ["error"], names
    error = events[-1][1]
    assert set(error) == {"type", "detail"}, error
    assert error["type"] == kind
    assert isinstance(error["detail"], str)
    return "".join(data["text"] for name, data in events if name == "delta"), error["detail"]


def assert_422(response: httpx.Response) -> list[dict[str, Any]]:
    """The validation errors of a 422, without the rejected input echoed back."""
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert isinstance(errors, list)
    assert all(set(error) == {"loc", "msg", "type"} for error in errors), errors
    return errors


# ── 1. every upstream fault at every endpoint ────────────────────────────────


def _fault_cases() -> list[Any]:
    cases = []
    for fault in FAULTS:
        for endpoint in ENDPOINTS:
            cases.append(pytest.param(fault, endpoint, id=f"{fault.id}-{endpoint.name}"))
    return cases


@pytest.mark.parametrize(("fault", "endpoint"), _fault_cases())
async def test_upstream_fault_is_an_http_error_naming_the_upstream(
    client: httpx.AsyncClient,
    upstreams: Upstreams,
    admin_headers: Headers,
    fault: Fault,
    endpoint: Endpoint,
) -> None:
    url = fault.arrange(upstreams)
    response = await client.post(
        endpoint.path, json=endpoint.body(model=fault.model), headers=admin_headers
    )
    if fault.in_stream(endpoint.stream):
        text, message = assert_error_event(response, fault.kind)
        assert text == ""
    else:
        message = assert_error(response, fault.status, fault.kind)
    assert message.startswith(fault.expected_message(url, endpoint.stream)), message
    assert response.headers.get("retry-after") == fault.retry_after
    assert chat_calls(upstreams) == fault.upstream_calls


# ── faults after the first text: the stream has started, so an `error` event ──


@pytest.mark.parametrize(("arrange", "text", "message"), AFTER_TEXT)
async def test_stream_fault_after_text_is_an_error_event_and_not_retried(
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
    response = await client.post(
        "/api/v1/llm/stream", json={"prompt": "one two three four five"}, headers=admin_headers
    )
    relayed, detail = assert_error_event(response, "llm_upstream_error")
    assert relayed == text
    assert detail.startswith(message.format(url=upstream.base_url)), detail
    assert len(upstream.chat_requests) == 1  # text was sent: a retry would repeat it


async def test_stream_timeout_after_text_is_an_error_event(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_timeout=1, lmstudio_max_retries=2)
    upstream.slow_stream(n_chunks=3, interval=1.6)
    response = await client.post("/api/v1/llm/stream", json={"prompt": "x"}, headers=admin_headers)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["delta", "error"]
    assert events[1][1] == {
        "type": "llm_timeout_error",
        "detail": f"LM Studio did not answer within 1 s (model {MODEL}). It accepted the "
        "request, so the model is probably still generating; it was not sent again. Raise "
        "LMSTUDIO_TIMEOUT, ask for fewer tokens (max_tokens), or use a smaller or faster model.",
    }
    assert len(upstream.chat_requests) == 1


async def test_stream_cut_before_text_is_retried_and_succeeds(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=1)
    upstream.stream_cut(after_chunks=0)
    upstream.reply("fine now")
    response = await client.post("/api/v1/llm/stream", json={"prompt": "x"}, headers=admin_headers)
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["delta", "delta", "done"]
    assert len(upstream.chat_requests) == 2


# ── 3. limits and bad input ─────────────────────────────────────────────────


@each_endpoint
@pytest.mark.parametrize(
    ("prompt", "error_type", "msg"),
    [
        ("", "string_too_short", "String should have at least 1 character"),
        ("   \n\t", "value_error", "Value error, prompt must not be empty"),
        (None, "missing", "Field required"),
    ],
    ids=["empty", "blank", "missing"],
)
async def test_empty_prompt_is_422(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    endpoint: Endpoint,
    prompt: str | None,
    error_type: str,
    msg: str,
) -> None:
    body = endpoint.body(prompt or "")
    if prompt is None:
        del body["prompt"]
    response = await client.post(endpoint.path, json=body, headers=admin_headers)
    assert assert_422(response) == [{"loc": ["body", "prompt"], "msg": msg, "type": error_type}]
    assert upstream.chat_requests == []


@each_endpoint
async def test_unknown_fields_are_422(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    endpoint: Endpoint,
) -> None:
    body = endpoint.body(temprature=0.5, messages=[{"role": "user", "content": "x"}])
    response = await client.post(endpoint.path, json=body, headers=admin_headers)
    assert assert_422(response) == [
        {"loc": ["body", field], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        for field in ("temprature", "messages")
    ]
    assert upstream.chat_requests == []


@each_endpoint
async def test_unknown_provider_is_400_naming_it(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    endpoint: Endpoint,
) -> None:
    response = await client.post(
        endpoint.path, json=endpoint.body(provider="lmstuido"), headers=admin_headers
    )
    message = assert_error(response, 400, "llm_configuration_error")
    assert message == (
        "Unknown LLM provider 'lmstuido'; choose one of: lmstudio, openai, openrouter, "
        "ollama, bedrock"
    )
    assert upstream.chat_requests == []


@each_endpoint
async def test_max_tokens_over_the_cap_is_422_and_the_cap_itself_passes(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    endpoint: Endpoint,
) -> None:
    llm_no_retries.set(lmstudio_model=MODEL, llm_max_tokens=100)
    over = await client.post(
        endpoint.path, json=endpoint.body(max_tokens=101), headers=admin_headers
    )
    assert assert_422(over) == [
        {
            "loc": ["body", "max_tokens"],
            "msg": "max_tokens must be at most 100 (LLM_MAX_TOKENS)",
            "type": "less_than_equal",
        }
    ]
    assert upstream.chat_requests == []
    at_cap = await client.post(
        endpoint.path, json=endpoint.body(max_tokens=100), headers=admin_headers
    )
    assert at_cap.status_code == 200, at_cap.text
    assert upstream.chat_requests[0].json["max_tokens"] == 100


@pytest.mark.parametrize(
    ("schema", "msg"),
    [
        ({"type": "nonsense"}, "Value error, not a valid JSON Schema: 'nonsense' is not valid"),
        ({"type": "object", "required": "name"}, "Value error, not a valid JSON Schema: 'name'"),
        ({"minimum": "zero"}, "Value error, not a valid JSON Schema: 'zero' is not of type"),
    ],
    ids=["bad_type", "required_not_a_list", "minimum_not_a_number"],
)
async def test_invalid_json_schema_is_422(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    schema: dict[str, Any],
    msg: str,
) -> None:
    response = await client.post(
        "/api/v1/llm/structured", json={"prompt": "x", "schema": schema}, headers=admin_headers
    )
    [error] = assert_422(response)
    assert error["loc"] == ["body", "schema"]
    assert error["type"] == "value_error"
    assert error["msg"].startswith(msg), error
    assert upstream.chat_requests == []


@pytest.mark.parametrize(
    ("kind", "raw", "why"),
    [
        ("prose", NOT_JSON, "the reply contains no JSON object"),
        ("wrong_shape", '["unexpected", "shape"]', "value: ['unexpected', 'shape'] is not of type"),
    ],
)
async def test_structured_reply_that_never_validates_is_422_with_raw_text_and_attempts(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    kind: Any,
    raw: str,
    why: str,
) -> None:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=2)
    upstream.invalid_json(times=None, kind=kind)
    response = await client.post(
        "/api/v1/llm/structured",
        json={"prompt": "a person", "schema": SCHEMA},
        headers=admin_headers,
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail", "type", "raw_text", "attempts"}
    assert body["type"] == "llm_validation_error"
    assert body["attempts"] == 3
    assert body["raw_text"] == raw
    assert body["detail"].startswith(
        f"LM Studio model '{MODEL}' gave no valid response in 3 attempts: {why}"
    ), body["detail"]
    assert len(upstream.chat_requests) == 3


def _padded_body(size: int) -> bytes:
    """A JSON body of exactly `size` bytes that the endpoint rejects with 422 once read."""
    head, tail = b'{"prompt": "', b'", "padding_field": 1}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
async def test_body_over_max_request_bytes_is_413(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
    chunked: bool,
) -> None:
    limit = llm_no_retries.original.max_request_bytes
    headers = {**admin_headers, "content-type": "application/json"}

    async def post(body: bytes) -> httpx.Response:
        content: bytes | AsyncIterator[bytes] = body
        if chunked:

            async def parts() -> AsyncIterator[bytes]:
                for start in range(0, len(body), 65_536):
                    yield body[start : start + 65_536]

            content = parts()
        response = await client.post("/api/v1/llm/generate", content=content, headers=headers)
        sent = response.request.headers
        assert ("content-length" not in sent) is chunked
        assert (sent.get("transfer-encoding") == "chunked") is chunked
        return response

    too_large = await post(_padded_body(limit + 1))
    assert too_large.status_code == 413, too_large.text
    assert too_large.json() == {
        "detail": f"Request body is larger than {limit} bytes (MAX_REQUEST_BYTES)"
    }
    at_limit = await post(_padded_body(limit))  # read in full: rejected for its content
    [error] = assert_422(at_limit)
    assert error["loc"] == ["body", "padding_field"]
    assert upstream.chat_requests == []


# ── concurrency: one slot, a bounded wait, then 429 with Retry-After ─────────


async def test_concurrency_limit_is_429_with_retry_after_then_frees_up(
    client: httpx.AsyncClient, llm_env: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    llm_env.set(lmstudio_model=MODEL, llm_max_concurrency=1, llm_queue_timeout=0.3)
    upstream.slow_stream(n_chunks=12, interval=0.05)
    async with client.stream(
        "POST", "/api/v1/llm/stream", json={"prompt": "x"}, headers=admin_headers
    ) as holder:
        lines = holder.aiter_lines()
        async for line in lines:
            if line.startswith("data:"):
                break  # the holder has its slot and is streaming
        started = asyncio.get_running_loop().time()
        refused = await asyncio.gather(
            *(client.post(e.path, json=e.body(), headers=admin_headers) for e in ENDPOINTS)
        )
        waited = asyncio.get_running_loop().time() - started
        rest = "".join([line async for line in lines])
    assert 0.25 < waited < 1.0
    for response in refused:
        message = assert_error(response, 429, "llm_overloaded")
        assert response.headers["retry-after"] == "1"
        assert message == (
            f"LM Studio at {upstream.base_url} is busy: 1 requests are running and this one "
            "waited 0.3 s for a turn; try again shortly or raise LLM_MAX_CONCURRENCY"
        )
    assert "event: done" in rest  # the holder was not disturbed
    assert len(upstream.chat_requests) == 1
    after = await client.post("/api/v1/llm/generate", json={"prompt": "x"}, headers=admin_headers)
    assert after.status_code == 200, after.text


# ── 401 ─────────────────────────────────────────────────────────────────────


@each_endpoint
@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Not authenticated"),
        ({"Authorization": "Bearer nope"}, "Could not validate credentials"),
    ],
    ids=["no_credentials", "bad_token"],
)
async def test_unauthenticated_is_401(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    endpoint: Endpoint,
    headers: Headers,
    detail: str,
) -> None:
    response = await client.post(endpoint.path, json=endpoint.body(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": detail}
    assert upstream.chat_requests == []


# ── 4. metrics ──────────────────────────────────────────────────────────────


async def test_metrics_count_calls_outcomes_latency_first_token_and_tokens(
    client: httpx.AsyncClient,
    llm_no_retries: LLMEnv,
    upstream: StandInServer,
    admin_headers: Headers,
) -> None:
    await wait_streams_idle(client)
    before = await scrape(client)

    upstream.reply("one two three")
    ok = await client.post("/api/v1/llm/generate", json={"prompt": "a b"}, headers=admin_headers)
    assert ok.status_code == 200
    upstream.fail(500)
    failed = await client.post("/api/v1/llm/generate", json={"prompt": "c"}, headers=admin_headers)
    assert failed.status_code == 502
    upstream.reply("four five")
    streamed = await client.post("/api/v1/llm/stream", json={"prompt": "d"}, headers=admin_headers)
    done = sse_events(streamed.text)[-1]
    assert done[0] == "done"
    upstream.no_models_loaded()
    refused = await client.post("/api/v1/llm/stream", json={"prompt": "e"}, headers=admin_headers)
    assert refused.status_code == 503

    await wait_streams_idle(client)
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    llm_labels = {"provider": "lmstudio", "model": MODEL}
    requests = "llm_requests_total"
    assert delta(requests, **llm_labels, kind="complete", outcome="ok") == 1
    assert delta(requests, **llm_labels, kind="complete", outcome="llm_upstream_error") == 1
    assert delta(requests, **llm_labels, kind="stream", outcome="ok") == 1
    assert delta(requests, **llm_labels, kind="stream", outcome="llm_no_models_error") == 1
    duration = "llm_request_duration_seconds"
    assert delta(f"{duration}_count", **llm_labels, kind="complete") == 2
    assert delta(f"{duration}_count", **llm_labels, kind="stream") == 2
    assert delta(f"{duration}_sum", **llm_labels, kind="complete") > 0
    assert delta(f"{duration}_bucket", **llm_labels, kind="stream", le="+Inf") == 2
    assert delta("llm_time_to_first_token_seconds_count", **llm_labels) == 1
    assert delta("llm_time_to_first_token_seconds_sum", **llm_labels) > 0
    usage = [ok.json()["usage"], done[1]["usage"]]
    for direction in ("prompt", "completion"):
        expected = sum(u[f"{direction}_tokens"] for u in usage)
        assert expected > 0
        assert delta("llm_tokens_total", **llm_labels, direction=direction) == expected
    assert value(after, "llm_streams_in_flight", provider="lmstudio") == 0
