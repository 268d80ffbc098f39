"""The LM Studio provider against the stand-in server: replies, streams, faults, retries."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest
from aiohttp import web

from app.core.config import LLMProvider
from app.services.llm import (
    LLMConnectionError,
    LLMModelNotFoundError,
    LLMNoModelsError,
    LLMTimeoutError,
    LLMUpstreamError,
    ModelInfo,
    ProviderService,
    discovery_service,
    get_llm_service_with_overrides,
)
from app.services.llm.protocol import LLMService
from tests.conftest import LLMEnv
from tests.upstream import StandInServer, unused_url

MODEL = "llama-3.2-3b-instruct"


async def service(llm_env: LLMEnv, **env: object) -> LLMService:
    llm_env.set(lmstudio_model=MODEL, **env)
    return (await get_llm_service_with_overrides(provider="lmstudio")).service


async def test_get_response_returns_the_upstream_text(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    upstream.reply("Quantum computers use qubits.")
    text = await llm.get_response("Explain quantum computing", system="Be brief", max_tokens=50)
    assert text == "Quantum computers use qubits."
    sent = upstream.chat_requests[0].json
    assert sent["model"] == MODEL
    assert sent["max_tokens"] == 50
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Explain quantum computing"},
    ]


async def test_stream_yields_several_chunks_that_add_up(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    whole = await llm.get_response("count to five")
    chunks = [chunk async for chunk in llm.stream_response("count to five")]
    assert len(chunks) > 1
    assert "".join(chunks) == whole
    assert upstream.chat_requests[1].json["stream"] is True


async def test_connection_refused_names_url_and_what_to_do(llm_env: LLMEnv) -> None:
    url = unused_url()
    llm = await service(llm_env, lmstudio_base_url=url, lmstudio_max_retries=1)
    with pytest.raises(LLMConnectionError) as caught:
        await llm.get_response("hi")
    assert caught.value.message == (
        f"Cannot connect to LM Studio at {url}: is LM Studio's server running? Start it in "
        "LM Studio (Developer tab) or with `lms server start`, and check LMSTUDIO_BASE_URL."
    )
    assert caught.value.status_code == 503


async def test_server_errors_are_retried_then_succeed(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, lmstudio_max_retries=3)
    upstream.fail(503, times=2)
    upstream.reply("finally")
    assert await llm.get_response("hi") == "finally"
    assert len(upstream.chat_requests) == 3


async def test_retries_stop_at_max_retries(llm_env: LLMEnv, upstream: StandInServer) -> None:
    llm = await service(llm_env, lmstudio_max_retries=2)
    upstream.fail(500, body={"error": "model crashed"}, times=None)
    with pytest.raises(LLMUpstreamError) as caught:
        await llm.get_response("hi")
    assert len(upstream.chat_requests) == 3
    assert caught.value.message == (
        f"LM Studio at {upstream.base_url} answered HTTP 500: model crashed"
    )


async def test_rate_limit_is_retried(llm_env: LLMEnv, upstream: StandInServer) -> None:
    llm = await service(llm_env, lmstudio_max_retries=1)
    upstream.fail(429, headers={"Retry-After": "0"})
    upstream.reply("ok")
    assert await llm.get_response("hi") == "ok"
    assert len(upstream.chat_requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_client_errors_are_never_retried(
    llm_env: LLMEnv, upstream: StandInServer, status: int
) -> None:
    llm = await service(llm_env, lmstudio_max_retries=3)
    upstream.fail(status, body={"error": "nope"})
    with pytest.raises(LLMUpstreamError):
        await llm.get_response("hi")
    assert len(upstream.chat_requests) == 1


async def test_timeout_names_the_seconds_and_the_remedies(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, lmstudio_timeout=1, lmstudio_max_retries=0)
    upstream.delay(3)
    with pytest.raises(LLMTimeoutError) as caught:
        await llm.get_response("hi")
    assert caught.value.message == (
        f"LM Studio at {upstream.base_url} did not answer within 1 s (model {MODEL}). It "
        "accepted the request, so the model is probably still generating; it was not sent "
        "again. Raise LMSTUDIO_TIMEOUT, ask for fewer tokens (max_tokens), or use a smaller or "
        "faster model."
    )
    assert caught.value.status_code == 504


async def test_read_timeout_is_not_retried(llm_env: LLMEnv, upstream: StandInServer) -> None:
    # The upstream accepted the request and is working on it: sending it again would only
    # start the same work over (and take as long).
    llm = await service(llm_env, lmstudio_timeout=1, lmstudio_max_retries=2)
    upstream.delay(3)
    upstream.reply("never asked for")
    with pytest.raises(LLMTimeoutError):
        await llm.get_response("hi")
    assert len(upstream.chat_requests) == 1


async def test_garbage_reply_is_an_upstream_error(llm_env: LLMEnv, upstream: StandInServer) -> None:
    llm = await service(llm_env, lmstudio_max_retries=0)
    upstream.garbage()
    with pytest.raises(LLMUpstreamError) as caught:
        await llm.get_response("hi")
    assert str(upstream.base_url) in caught.value.message


async def test_stream_cut_after_text_is_not_retried(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, lmstudio_max_retries=3)
    upstream.stream_cut(after_chunks=3)
    received: list[str] = []

    async def drain() -> None:
        async for chunk in llm.stream_response("tell me a long story please"):
            received.append(chunk)

    with pytest.raises(LLMUpstreamError) as caught:
        await drain()
    assert received
    assert re.fullmatch(
        rf"The stream from LM Studio at {re.escape(upstream.base_url)} broke off after "
        rf"{len(received)} chunks \(\w+\)",
        caught.value.message,
    ), caught.value.message
    assert len(upstream.chat_requests) == 1


async def test_stream_failing_before_text_is_retried(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, lmstudio_max_retries=2)
    upstream.fail(503)
    chunks = [chunk async for chunk in llm.stream_response("hello there")]
    assert "".join(chunks)
    assert len(upstream.chat_requests) == 2


async def test_no_models_loaded_says_to_load_one(llm_env: LLMEnv, upstream: StandInServer) -> None:
    llm = await service(llm_env)
    upstream.no_models_loaded()
    with pytest.raises(LLMNoModelsError) as caught:
        await llm.get_response("hi")
    assert caught.value.message == (
        f"LM Studio at {upstream.base_url} has no model loaded: load a model in LM Studio "
        "(Developer tab, or `lms load <model>`) or enable just-in-time model loading"
    )
    assert len(upstream.chat_requests) == 1


async def test_unknown_model_is_named(llm_env: LLMEnv, upstream: StandInServer) -> None:
    llm_env.set(lmstudio_model=MODEL)
    llm = (await get_llm_service_with_overrides("lmstudio", "no-such-model")).service
    with pytest.raises(LLMModelNotFoundError) as caught:
        await llm.get_response("hi")
    assert "'no-such-model'" in caught.value.message
    assert caught.value.status_code == 404


async def test_each_call_is_logged_at_debug_without_secrets(
    llm_env: LLMEnv, upstream: StandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    llm = await service(llm_env, lmstudio_api_key="lm-secret-token-123")
    caplog.set_level(logging.DEBUG, logger="app.services.llm")
    await llm.get_response("Explain quantum computing")
    _ = [c async for c in llm.stream_response("stream this")]
    calls = [r.getMessage() for r in caplog.records if r.name == "app.services.llm"]
    assert any(
        m.startswith("llm complete provider=lmstudio model='llama-3.2-3b-instruct'")
        and f"base_url={upstream.base_url}" in m
        and "prompt_chars=25" in m
        and "latency_ms=" in m
        and "completion_tokens=" in m
        for m in calls
    ), calls
    assert any(m.startswith("llm stream ") for m in calls)
    assert "lm-secret-token-123" not in caplog.text
    assert upstream.chat_requests[0].headers["authorization"] == "Bearer lm-secret-token-123"


async def test_rejected_token_is_not_echoed(llm_env: LLMEnv, upstream: StandInServer) -> None:
    upstream.api_key = "the-right-token"
    llm = await service(llm_env, lmstudio_api_key="wrong-token-value")
    with pytest.raises(LLMUpstreamError) as caught:
        await llm.get_response("hi")
    assert caught.value.message == (
        f"LM Studio at {upstream.base_url} rejected the credentials (HTTP 401): "
        "set LMSTUDIO_API_KEY to a valid key"
    )


def _answer(body: object) -> Callable[..., web.Response]:
    return lambda _request, _record: web.json_response(body)


@pytest.mark.parametrize(
    "body",
    [{"choices": []}, {"choices": [None]}, {"choices": "nope"}, [], {"object": "list"}],
)
async def test_a_200_that_is_not_a_chat_completion_is_an_upstream_error(
    llm_env: LLMEnv, upstream: StandInServer, body: object
) -> None:
    llm = await service(llm_env, lmstudio_max_retries=0)
    upstream.enqueue(_answer(body))
    with pytest.raises(LLMUpstreamError, match="not a chat completion"):
        await llm.get_response("hi")


async def test_lmstudios_200_unexpected_endpoint_says_to_check_the_base_url(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, lmstudio_max_retries=0)
    upstream.enqueue(_answer({"error": "Unexpected endpoint or method. (POST /chat/completions)"}))
    with pytest.raises(LLMUpstreamError, match="LMSTUDIO_BASE_URL ends with /v1"):
        await llm.get_response("hi")


async def test_odd_field_types_are_read_defensively(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    assert isinstance(llm, ProviderService)
    odd = {
        "choices": [
            {"message": {"content": None, "reasoning_content": "thinking"}, "finish_reason": 7}
        ],
        "usage": {"prompt_tokens": "12", "completion_tokens": -3},
    }
    upstream.enqueue(_answer(odd))
    completion = await llm.complete([{"role": "user", "content": "hi"}])
    assert (completion.text, completion.reasoning, completion.finish_reason) == (
        "",
        "thinking",
        None,
    )
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (0, 0)


async def _close_without_reply(request: web.Request, _record: object) -> web.Response:
    assert request.transport is not None
    request.transport.close()  # as a server does with an idle keep-alive connection
    return web.Response()


async def test_a_connection_closed_with_no_reply_is_resent_at_once(
    llm_env: LLMEnv, upstream: StandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    # llama.cpp closes its side after a stream; when that close wins the race with our next
    # request on the pooled connection, the read finds no reply at all.
    llm = await service(llm_env, lmstudio_max_retries=0)
    caplog.set_level(logging.DEBUG, logger="app.services.llm")
    upstream.enqueue(_close_without_reply)
    assert await llm.get_response("hi") == "Echo: hi"
    assert "pooled connection was closed; resending" in caplog.text
    assert "llm retry" not in caplog.text


# ── discovery: REST API v1, then v0, then OpenAI's /v1/models ────────────────


def _listing_paths(server: StandInServer) -> list[str]:
    return [r.path for r in server.requests if r.method == "GET"]


async def test_discovery_reads_the_rest_api_v1_with_not_loaded_models(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    upstream.set_loaded(["mistral-7b-instruct"])
    models = await discovery_service(LLMProvider.LMSTUDIO).list_models()
    assert _listing_paths(upstream) == ["/api/v1/models"]
    by_id = {m.id: m for m in models}
    assert list(by_id) == ["llama-3.2-3b-instruct", "mistral-7b-instruct", "codellama-7b"]
    assert by_id["mistral-7b-instruct"] == ModelInfo(
        id="mistral-7b-instruct",
        type="llm",
        state="loaded",
        max_context_length=131072,
        publisher="lmstudio-community",
        quantization="Q4_K_M",
        tool_use=True,
    )
    assert by_id["codellama-7b"].state == "not-loaded"


async def test_discovery_falls_back_to_v0_when_lm_studio_03_says_unexpected_endpoint(
    llm_env: LLMEnv,
) -> None:
    with StandInServer(rest_v1=False) as old:
        old.set_loaded(["codellama-7b"])
        llm_env.set(lmstudio_base_url=old.base_url)
        models = await discovery_service(LLMProvider.LMSTUDIO).list_models()
        paths = _listing_paths(old)
    assert paths == ["/api/v1/models", "/api/v0/models"]
    assert {m.id: m.state for m in models} == {
        "llama-3.2-3b-instruct": "not-loaded",
        "mistral-7b-instruct": "not-loaded",
        "codellama-7b": "loaded",
    }
    assert {m.quantization for m in models} == {"Q4_K_M"}


async def test_discovery_falls_back_to_openai_models_without_a_native_api(
    llm_env: LLMEnv,
) -> None:
    with StandInServer(native_api=False, error_style="openai") as plain:
        llm_env.set(lmstudio_base_url=plain.base_url)
        models = await discovery_service(LLMProvider.LMSTUDIO).list_models()
        paths = _listing_paths(plain)
    assert paths == ["/api/v1/models", "/api/v0/models", "/v1/models"]
    assert [m.id for m in models] == [
        "llama-3.2-3b-instruct",
        "mistral-7b-instruct",
        "codellama-7b",
    ]
    assert {m.state for m in models} == {None}


async def test_discovery_reports_a_server_error_of_the_rest_api(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    upstream.fail(500, route="native_models")
    with pytest.raises(LLMUpstreamError, match="HTTP 500"):
        await discovery_service(LLMProvider.LMSTUDIO).list_models()
    assert _listing_paths(upstream) == ["/api/v1/models"]
