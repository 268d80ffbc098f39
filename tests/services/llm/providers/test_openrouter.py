"""The OpenRouter wire, driven by the provider-neutral service, against a stand-in OpenRouter:
attribution, routing, credits, rate limits, errors inside a 200 stream, discovery, cost."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from app.core.config import Settings
from app.services.llm.calls import ProviderService
from app.services.llm.config import OpenRouterConfig
from app.services.llm.errors import (
    LLMAuthenticationError,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMUpstreamError,
)
from app.services.llm.protocol import ModelInfo
from app.services.llm.providers.openrouter import SPEC
from tests.services.llm.streams import after_acceptance
from tests.upstream import unused_url
from tests.upstream.openrouter_server import OpenRouterStandIn

KEY = "sk-or-test"
MODEL = "openai/gpt-4o"
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def openrouter_server() -> Iterator[OpenRouterStandIn]:
    with OpenRouterStandIn(api_key=KEY) as server:
        yield server


@pytest.fixture
def openrouter(openrouter_server: OpenRouterStandIn) -> OpenRouterStandIn:
    openrouter_server.reset()
    return openrouter_server


def service(
    server: OpenRouterStandIn | None = None, *, key: str = KEY, max_retries: int = 1, **extra: str
) -> ProviderService:
    config = OpenRouterConfig(
        base_url=server.base_url if server is not None else unused_url(),
        api_key=SecretStr(key),
        default_model=MODEL,
        timeout=2,
        max_retries=max_retries,
        **extra,
    )
    return ProviderService(SPEC, config, retry_backoff=0.01)


def hello() -> list[dict[str, str]]:
    return [{"role": "user", "content": "hello"}]


async def read_into(received: list[str], texts: AsyncIterator[str]) -> None:
    """Append each text as it arrives (what was received stays when the stream fails)."""
    async for text in texts:
        received.append(text)


async def test_text_reply_with_the_key_as_bearer_and_the_model_id_as_it_is(
    openrouter: OpenRouterStandIn,
) -> None:
    completion = await service(openrouter).complete(hello())
    assert completion.text == "Echo: hello"
    assert completion.finish_reason == "stop"
    assert completion.provider == "openrouter"
    assert completion.model == MODEL
    sent = openrouter.chat_requests[0]
    assert sent.path == "/api/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json["model"] == "openai/gpt-4o"
    assert sent.json["messages"] == hello()


async def test_attribution_headers_only_when_set(openrouter: OpenRouterStandIn) -> None:
    await service(openrouter).complete(hello())
    await service(openrouter).list_models()
    attributed = service(openrouter, app_url="https://example.org/café", app_title="Café\nApp")
    await attributed.complete(hello())
    await attributed.list_models()
    plain_chat, plain_models, chat, models = openrouter.requests
    for plain in (plain_chat, plain_models):
        assert "http-referer" not in plain.headers
        assert "x-title" not in plain.headers
    for request in (chat, models):
        # A line break would split the header, text outside ASCII fail every request.
        assert request.headers["http-referer"] == "https://example.org/caf%C3%A9"
        assert request.headers["x-title"] == "Caf%C3%A9 App"


async def test_require_parameters_only_with_a_response_format(
    openrouter: OpenRouterStandIn,
) -> None:
    llm = service(openrouter)
    await llm.complete(hello())
    await llm.complete(hello(), response_format=JSON_SCHEMA)
    json_object = {"type": "json_object"}
    _ = [chunk async for chunk in llm.stream_chunks(hello(), response_format=json_object)]
    _ = [chunk async for chunk in llm.stream_chunks(hello())]
    plain, structured, streamed_structured, streamed_plain = (
        r.json for r in openrouter.chat_requests
    )
    assert "provider" not in plain
    assert "provider" not in streamed_plain
    assert structured["provider"] == {"require_parameters": True}
    assert structured["response_format"] == JSON_SCHEMA
    assert streamed_structured["provider"] == {"require_parameters": True}
    assert streamed_structured["response_format"] == {"type": "json_object"}


async def test_out_of_credits_says_so_and_is_not_retried(openrouter: OpenRouterStandIn) -> None:
    openrouter.fail(402, "Insufficient credits", times=2)
    with pytest.raises(LLMUpstreamError) as caught:
        await service(openrouter).complete(hello())
    assert caught.value.upstream_status == 402
    assert not caught.value.retryable
    assert caught.value.message == (
        f"OpenRouter at {openrouter.base_url} says the account is out of credits (HTTP 402: "
        "Insufficient credits): add credits at https://openrouter.ai/settings/credits, or "
        "raise the API key's credit limit"
    )
    assert caught.value.public_message.startswith("OpenRouter says the account is out of credits")
    assert len(openrouter.chat_requests) == 1


async def test_429_retry_after_is_honoured_once(openrouter: OpenRouterStandIn) -> None:
    openrouter.fail(429, "Rate limit exceeded", headers={"Retry-After": "0.3"})
    completion = await service(openrouter, max_retries=1).complete(hello())
    assert completion.text == "Echo: hello"
    first, second = openrouter.chat_requests
    assert second.at - first.at >= 0.3  # the backoff alone would be about 0.01 s

    openrouter.fail(429, "Rate limit exceeded", headers={"Retry-After": "0.05"})
    with pytest.raises(LLMRateLimitError) as caught:
        await service(openrouter, max_retries=0).complete(hello())
    assert caught.value.retry_after == 0.05
    assert caught.value.retryable


async def test_a_mid_stream_error_is_raised_after_the_text_already_yielded(
    openrouter: OpenRouterStandIn,
) -> None:
    openrouter.error_mid_stream(["Hello", " there"], "Provider returned error", code=502)
    received: list[str] = []
    with pytest.raises(LLMUpstreamError) as caught:
        await read_into(received, service(openrouter).stream_response("hello"))
    assert received == ["Hello", " there"]
    assert caught.value.message == (
        f"OpenRouter at {openrouter.base_url} reported an error mid-stream: "
        "Provider returned error (code 502)"
    )
    assert not caught.value.retryable
    assert len(openrouter.chat_requests) == 1


async def test_an_error_only_in_the_choice_is_raised_too(openrouter: OpenRouterStandIn) -> None:
    openrouter.error_mid_stream(["Hi"], "Model overloaded", code="server_error", in_choice=True)
    received: list[str] = []
    with pytest.raises(LLMUpstreamError) as caught:
        await read_into(received, service(openrouter).stream_response("hello"))
    assert received == ["Hi"]
    assert caught.value.message.endswith(
        "reported an error mid-stream: Model overloaded (code server_error)"
    )


async def test_an_error_in_a_200_body_is_an_error(openrouter: OpenRouterStandIn) -> None:
    openrouter.error_in_body("Provider returned error", code=502)
    with pytest.raises(LLMUpstreamError) as caught:
        await service(openrouter).complete(hello())
    assert caught.value.message == (
        f"OpenRouter at {openrouter.base_url} reported an error while generating the reply "
        f"(model {MODEL}): Provider returned error (code 502)"
    )
    assert len(openrouter.chat_requests) == 1


async def test_processing_comments_are_ignored(openrouter: OpenRouterStandIn) -> None:
    openrouter.reply("x", keep_alives=1)  # first, see that the stand-in does send them
    async with httpx.AsyncClient(timeout=2) as raw:
        answer = await raw.post(
            f"{openrouter.base_url}/chat/completions",
            json={"model": MODEL, "messages": hello(), "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert answer.content.startswith(b": OPENROUTER PROCESSING\n\ndata: ")
    openrouter.reply("one two three", keep_alives=2)
    streamed = after_acceptance(service(openrouter).stream_chunks(hello()))
    chunks = [chunk async for chunk in streamed]
    assert "".join(chunk.text for chunk in chunks) == "one two three"
    assert [chunk.text for chunk in chunks[:-1]] == ["one", " two", " three"]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_cost_is_read_from_usage(openrouter: OpenRouterStandIn) -> None:
    llm = service(openrouter)
    openrouter.reply("a b", cost=0.0125)
    completion = await llm.complete(hello())
    assert completion.usage.cost == 0.0125
    assert completion.usage.completion_tokens == 2
    openrouter.reply("a b c", cost=0.5)
    last = [chunk async for chunk in llm.stream_chunks(hello())][-1]
    assert last.usage is not None
    assert last.usage.cost == 0.5
    assert last.usage.completion_tokens == 3
    openrouter.reply("free", cost=None)
    assert (await llm.complete(hello())).usage.cost is None


async def test_discovery_reads_context_length_and_structured_outputs(
    openrouter: OpenRouterStandIn,
) -> None:
    openrouter.models = [
        *openrouter.models,
        {"id": "odd/model", "context_length": "unknown"},
        {"name": "an entry without an id"},
    ]
    models = await service(openrouter).list_models()
    assert models == [
        ModelInfo(id="openai/gpt-4o", max_context_length=128000, structured_output=True),
        ModelInfo(
            id="meta-llama/llama-3.1-8b-instruct",
            max_context_length=131072,
            structured_output=False,
        ),
        ModelInfo(id="odd/model"),
    ]
    request = openrouter.requests[0]
    assert (request.method, request.path) == ("GET", "/api/v1/models")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert await service(openrouter).context_length() == 128000


async def test_discovery_failures_are_llm_errors(openrouter: OpenRouterStandIn) -> None:
    openrouter.fail(503, "No available providers", route="models")
    with pytest.raises(LLMUpstreamError) as caught:
        await service(openrouter).list_models()
    assert caught.value.upstream_status == 503
    with pytest.raises(LLMConnectionError) as refused:
        await service().list_models()
    assert "check OPENROUTER_BASE_URL and this machine's network" in refused.value.message


async def test_the_key_never_appears_in_errors_or_logs(
    openrouter: OpenRouterStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-or-v1-wrong-0123456789"
    errors: list[LLMError] = []
    with pytest.raises(LLMAuthenticationError) as rejected:
        await service(openrouter, key=wrong).complete(hello())
    errors.append(rejected.value)
    assert rejected.value.message.endswith("set OPENROUTER_API_KEY to a valid key")
    # An upstream that echoes the key (in an error body, mid-stream, in a 402) gets it redacted.
    openrouter.fail(500, f"upstream saw {KEY}", times=2)
    openrouter.error_mid_stream(["x"], f"bad key {KEY}")
    openrouter.fail(402, f"key {KEY} has no credits")
    llm = service(openrouter)
    with pytest.raises(LLMUpstreamError) as failed:
        await llm.complete(hello())
    errors.append(failed.value)
    assert failed.value.message.endswith("answered HTTP 500: upstream saw [redacted]")
    with pytest.raises(LLMUpstreamError) as mid_stream:
        _ = [chunk async for chunk in llm.stream_chunks(hello())]
    errors.append(mid_stream.value)
    with pytest.raises(LLMUpstreamError) as no_credits:
        await llm.complete(hello())
    errors.append(no_credits.value)
    for error in errors:
        assert wrong not in error.message
        assert KEY not in error.message
        assert KEY not in error.public_message
    assert caplog.records  # the retry and the failures were logged
    assert KEY not in caplog.text
    assert wrong not in caplog.text


def test_settings_make_the_config_and_a_missing_key_is_named() -> None:
    unset = Settings(_env_file=None)
    assert not SPEC.credentials_set(unset)
    problem = SPEC.missing_credentials(unset)
    assert problem is not None
    assert problem.startswith("OPENROUTER_API_KEY is not set: ")
    settings = Settings(
        _env_file=None,
        openrouter_api_key="sk-or-from-env",
        openrouter_timeout=7,
        openrouter_max_retries=2,
        openrouter_app_url="https://example.org",
        openrouter_app_title="Example",
    )
    assert SPEC.credentials_set(settings)
    assert SPEC.missing_credentials(settings) is None
    config = SPEC.config_from(settings, MODEL)
    assert isinstance(config, OpenRouterConfig)
    assert config.base_url == "https://openrouter.ai/api/v1"
    assert config.api_key.get_secret_value() == "sk-or-from-env"
    assert (config.default_model, config.timeout, config.max_retries) == (MODEL, 7, 2)
    assert (config.app_url, config.app_title) == ("https://example.org", "Example")
    assert SPEC.base_url(settings) == "https://openrouter.ai/api/v1"
