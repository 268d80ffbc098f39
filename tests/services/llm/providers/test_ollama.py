"""The Ollama wire against a stand-in speaking Ollama's native API over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from app.core.config import LLMProvider, Settings
from app.services.llm.calls import ProviderService
from app.services.llm.config import OllamaConfig
from app.services.llm.errors import (
    LLMBadRequestError,
    LLMConnectionError,
    LLMError,
    LLMInvalidRequestError,
    LLMModelNotFoundError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUpstreamError,
)
from app.services.llm.protocol import ChatRequest, ModelInfo, StreamChunk, Usage
from app.services.llm.providers.clients import close_clients
from app.services.llm.providers.ollama import SPEC, OllamaWire
from tests.services.llm.streams import after_acceptance
from tests.upstream import unanswered_connect_url, unused_url
from tests.upstream.ollama_server import OllamaStandIn

pytestmark = pytest.mark.timeout(10)

MODEL = "llama3.2:latest"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def ollama_upstream() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models={MODEL: 131072}, loaded={MODEL: 4096}) as server:
        yield server


@pytest.fixture(autouse=True)
async def _close_pooled_sessions() -> AsyncIterator[None]:
    yield
    await close_clients()  # every test's pooled aiohttp sessions, before their server goes


@pytest.fixture
def ollama(ollama_upstream: OllamaStandIn) -> OllamaStandIn:
    ollama_upstream.reset()
    return ollama_upstream


def wire(url: str, **config: Any) -> OllamaWire:
    settings: dict[str, Any] = {"timeout": 2, **config}
    return OllamaWire(SPEC, OllamaConfig(base_url=url, default_model=MODEL, **settings))


def request(**fields: Any) -> ChatRequest:
    return ChatRequest(**{"model": MODEL, "messages": HELLO, **fields})


async def collect(chunks: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    """The chunks after the upstream's acceptance (checked: the first one)."""
    return [chunk async for chunk in after_acceptance(chunks)]


async def raised(call: Any) -> LLMError:
    with pytest.raises(LLMError) as caught:
        await call
    return caught.value


# ── chat ──────────────────────────────────────────────────────────────────────


async def test_a_reply_with_its_usage_and_nothing_unasked_sent(ollama: OllamaStandIn) -> None:
    completion = await wire(ollama.base_url).complete(request())
    assert completion.text == "Echo: hello there"
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(prompt_tokens=3, completion_tokens=3)
    assert completion.model == MODEL
    assert completion.reasoning is None
    assert ollama.chat_requests[0].json == {"model": MODEL, "messages": HELLO, "stream": False}


async def test_options_num_ctx_and_keep_alive_are_sent(ollama: OllamaStandIn) -> None:
    llm = wire(ollama.base_url, num_ctx=8192, keep_alive="10m")
    await llm.complete(request(temperature=0.2, max_tokens=50, seed=7, stop="END"))
    body = ollama.chat_requests[0].json
    assert body["options"] == {
        "temperature": 0.2,
        "num_predict": 50,
        "seed": 7,
        "stop": ["END"],
        "num_ctx": 8192,
    }
    assert body["keep_alive"] == "10m"
    assert "format" not in body


async def test_a_bare_number_keep_alive_is_sent_as_seconds(ollama: OllamaStandIn) -> None:
    await wire(ollama.base_url, keep_alive="-1").complete(request(temperature=0))
    body = ollama.chat_requests[0].json
    assert body["keep_alive"] == -1
    assert body["options"] == {"temperature": 0}


async def test_num_predict_cuts_the_reply_with_length(ollama: OllamaStandIn) -> None:
    completion = await wire(ollama.base_url).complete(request(max_tokens=1))
    assert (completion.text, completion.finish_reason) == ("Echo:", "length")


async def test_thinking_is_the_reasoning(ollama: OllamaStandIn) -> None:
    ollama.reply("42", thinking="six times seven")
    completion = await wire(ollama.base_url).complete(request())
    assert (completion.text, completion.reasoning) == ("42", "six times seven")


async def test_a_json_schema_is_sent_as_format(ollama: OllamaStandIn) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["name", "population"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "City", "schema": schema}}
    completion = await wire(ollama.base_url).complete(request(response_format=response_format))
    assert ollama.chat_requests[0].json["format"] == schema
    city = orjson.loads(completion.text)
    assert isinstance(city["name"], str)
    assert isinstance(city["population"], int)


async def test_json_object_is_format_json(ollama: OllamaStandIn) -> None:
    completion = await wire(ollama.base_url).complete(
        request(response_format={"type": "json_object"})
    )
    assert ollama.chat_requests[0].json["format"] == "json"
    assert orjson.loads(completion.text) == {"echo": "hello there"}


async def test_content_parts_become_text_and_inline_images(ollama: OllamaStandIn) -> None:
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    await wire(ollama.base_url).complete(request(messages=[{"role": "user", "content": parts}]))
    assert ollama.chat_requests[0].json["messages"] == [
        {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}
    ]
    remote = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    error = await raised(
        wire(ollama.base_url).complete(request(messages=[{"role": "user", "content": remote}]))
    )
    assert isinstance(error, LLMInvalidRequestError)
    assert len(ollama.chat_requests) == 1


async def test_text_that_is_not_unicode_is_refused_before_sending(ollama: OllamaStandIn) -> None:
    bad = [{"role": "user", "content": "broken \ud800 text"}]
    error = await raised(wire(ollama.base_url).complete(request(messages=bad)))
    assert isinstance(error, LLMInvalidRequestError)
    assert ollama.chat_requests == []


# ── streaming ─────────────────────────────────────────────────────────────────


async def test_a_stream_ends_with_the_reason_and_usage(ollama: OllamaStandIn) -> None:
    chunks = await collect(wire(ollama.base_url).stream(request()))
    assert [chunk.text for chunk in chunks[:-1]] == ["Echo:", " hello", " there"]
    last = chunks[-1]
    assert (last.text, last.finish_reason, last.model) == ("", "stop", MODEL)
    assert last.usage == Usage(prompt_tokens=3, completion_tokens=3)
    assert ollama.chat_requests[0].json["stream"] is True


async def test_streamed_thinking_is_reasoning(ollama: OllamaStandIn) -> None:
    ollama.reply("yes", thinking="hmm")
    chunks = await collect(wire(ollama.base_url).stream(request()))
    assert [(c.reasoning, c.text) for c in chunks[:-1]] == [("hmm", ""), ("", "yes")]


async def test_an_error_line_mid_stream_is_a_stream_error(ollama: OllamaStandIn) -> None:
    ollama.error_mid_stream(after_chunks=2, message="model runner crashed")
    seen: list[str] = []

    async def consume() -> None:
        async for chunk in after_acceptance(wire(ollama.base_url).stream(request())):
            seen.append(chunk.text)

    error = await raised(consume())
    assert seen == ["Echo:", " hello"]
    assert isinstance(error, LLMUpstreamError)
    assert "reported an error mid-stream: model runner crashed" in error.message
    assert error.retryable is False


async def test_a_stream_without_done_is_broken_off(ollama: OllamaStandIn) -> None:
    ollama.cut(after_chunks=1)
    error = await raised(collect(wire(ollama.base_url).stream(request())))
    assert isinstance(error, LLMUpstreamError)
    assert "before its reply was complete" in error.message
    assert error.retryable is True


async def test_a_line_over_the_bound_is_an_invalid_reply(ollama: OllamaStandIn) -> None:
    ollama.reply("x" * (1024 * 1024 + 10))
    error = await raised(collect(wire(ollama.base_url).stream(request())))
    assert isinstance(error, LLMUpstreamError)
    assert "a stream line over 1024 KiB" in error.message


async def test_closing_a_stream_early_closes_the_upstream_response(ollama: OllamaStandIn) -> None:
    ollama.reply(" ".join(["word"] * 200), interval=0.02)
    chunks = wire(ollama.base_url).stream(request())
    assert await anext(chunks) == StreamChunk()  # accepted
    assert (await anext(chunks)).text == "word"
    await chunks.aclose()  # type: ignore[attr-defined]
    # Waited for off the loop: the socket is closed by the loop's next turn.
    assert await asyncio.to_thread(ollama.disconnected.wait, 2)


# ── errors ────────────────────────────────────────────────────────────────────


async def test_an_unknown_model_says_how_to_pull_it(ollama: OllamaStandIn) -> None:
    error = await raised(wire(ollama.base_url).complete(request(model="qwen3:8b")))
    assert isinstance(error, LLMModelNotFoundError)
    assert "model 'qwen3:8b' not found" in error.message
    assert "pull it with `ollama pull qwen3:8b`" in error.message


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable", "text"),
    [
        (500, "the model failed to generate a response", LLMUpstreamError, True, "HTTP 500"),
        (502, b"<html>bad gateway</html>", LLMUpstreamError, True, "bad gateway"),
        (400, "invalid format: expected json", LLMBadRequestError, False, "invalid format"),
        (413, "request too large", LLMBadRequestError, False, "HTTP 413"),
        (200, b"not json at all", LLMUpstreamError, False, "not valid JSON"),
    ],
)
async def test_http_errors_carry_the_upstream_reason(
    ollama: OllamaStandIn,
    status: int,
    body: Any,
    kind: type[LLMError],
    retryable: bool,
    text: str,
) -> None:
    ollama.fail(status, body)
    error = await raised(wire(ollama.base_url).complete(request()))
    assert type(error) is kind
    assert error.retryable is retryable
    assert text in error.message


async def test_429_reads_retry_after(ollama: OllamaStandIn) -> None:
    ollama.fail(429, "too many requests", headers={"Retry-After": "3"})
    error = await raised(collect(wire(ollama.base_url).stream(request())))
    assert isinstance(error, LLMRateLimitError)
    assert (error.retry_after, error.retryable) == (3.0, True)


async def test_a_refused_connection_says_to_start_ollama() -> None:
    error = await raised(wire(unused_url()).complete(request()))
    assert isinstance(error, LLMConnectionError)
    assert error.retryable is True
    assert "is Ollama running? Start it with `ollama serve`" in error.message


async def test_a_connect_timeout_is_retryable() -> None:
    with unanswered_connect_url() as url:
        error = await raised(wire(url, timeout=1).complete(request()))
    assert isinstance(error, LLMTimeoutError)
    assert error.retryable is True


async def test_a_read_timeout_after_sending_is_not_retryable(ollama: OllamaStandIn) -> None:
    ollama.hang(5)
    error = await raised(wire(ollama.base_url, timeout=1).complete(request()))
    assert isinstance(error, LLMTimeoutError)
    assert error.retryable is False
    assert "accepted the request" in error.message


async def test_a_stale_connection_is_resent_once(ollama: OllamaStandIn) -> None:
    ollama.drop()
    completion = await wire(ollama.base_url).complete(request())
    assert completion.text == "Echo: hello there"
    assert len(ollama.chat_requests) == 2


async def test_a_second_drop_is_not_resent_again(ollama: OllamaStandIn) -> None:
    ollama.drop()
    ollama.drop()
    ollama.reply("never sent")
    error = await raised(collect(wire(ollama.base_url).stream(request())))
    assert isinstance(error, LLMUpstreamError)
    assert error.retryable is True
    assert len(ollama.chat_requests) == 2


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_stale_connection_is_resent_on_the_first_attempt_only(
    ollama: OllamaStandIn, streamed: bool
) -> None:
    for _ in range(4):  # a server hanging up on every request (4: one more than expected)
        ollama.drop()
    config = OllamaConfig(base_url=ollama.base_url, default_model=MODEL, timeout=2, max_retries=1)
    llm = ProviderService(SPEC, config, retry_backoff=0.01)
    error = await raised(collect(llm.stream_chunks(HELLO)) if streamed else llm.complete(HELLO))
    assert isinstance(error, LLMUpstreamError)
    assert error.retryable
    # The first attempt, its resend over a fresh connection, the one retry (not resent).
    assert len(ollama.chat_requests) == 3


# ── discovery ─────────────────────────────────────────────────────────────────


@pytest.fixture
def several() -> Iterator[OllamaStandIn]:
    models = {"llama3.2:latest": 131072, "qwen3:8b": 40960, "nomic-embed-text:latest": None}
    with OllamaStandIn(models=models, loaded={"llama3.2:latest": 4096}) as server:
        yield server


async def test_models_with_loaded_state_and_context(several: OllamaStandIn) -> None:
    models = await wire(several.base_url).list_models()
    assert models == [
        ModelInfo(
            id="llama3.2:latest", state="loaded", max_context_length=4096, quantization="Q4_K_M"
        ),
        ModelInfo(
            id="qwen3:8b", state="not-loaded", max_context_length=40960, quantization="Q4_K_M"
        ),
        ModelInfo(id="nomic-embed-text:latest", state="not-loaded", quantization="Q4_K_M"),
    ]
    shown = [r.json["model"] for r in several.requests if r.path == "/api/show"]
    assert sorted(shown) == ["nomic-embed-text:latest", "qwen3:8b"]  # loaded: from /api/ps
    assert OllamaWire.capabilities.loaded_state
    assert OllamaWire.capabilities.context_length


async def test_show_failures_and_a_missing_ps_are_ignored() -> None:
    with OllamaStandIn(models={"a:latest": 1000, "b:latest": 2000}) as server:
        server.fail(500, "boom", route="/api/show")
        server.fail(404, "404 page not found", route="/api/ps")
        models = await wire(server.base_url).list_models()
    assert [m.state for m in models] == [None, None]  # unknown without /api/ps
    contexts = [m.max_context_length for m in models]
    assert contexts in ([None, 2000], [1000, None])  # whichever /api/show failed


async def test_show_is_asked_for_the_first_twenty_models_only() -> None:
    models = {f"model-{i:02}:latest": 8192 for i in range(25)}
    with OllamaStandIn(models=models) as server:
        listed = await wire(server.base_url).list_models()
        shown = [r for r in server.requests if r.path == "/api/show"]
    assert len(listed) == 25
    assert len(shown) == 20
    assert [m.max_context_length for m in listed] == [8192] * 20 + [None] * 5


async def test_a_failing_tag_list_is_an_error(ollama: OllamaStandIn) -> None:
    ollama.fail(500, "disk on fire", route="/api/tags")
    error = await raised(wire(ollama.base_url).list_models())
    assert isinstance(error, LLMUpstreamError)
    assert "disk on fire" in error.message


# ── the mapping entry ─────────────────────────────────────────────────────────


def test_the_spec_builds_the_config_from_settings() -> None:
    settings = Settings(
        _env_file=None,
        ollama_base_url="http://gpu-box:11434",
        ollama_model="qwen3:8b",
        ollama_timeout=90,
        ollama_max_retries=1,
        ollama_num_ctx=16384,
        ollama_keep_alive="30m",
    )
    config = SPEC.config_from(settings, "")
    assert config == OllamaConfig(
        base_url="http://gpu-box:11434",
        default_model="qwen3:8b",
        timeout=90,
        max_retries=1,
        num_ctx=16384,
        keep_alive="30m",
    )
    assert SPEC.provider is LLMProvider.OLLAMA
    assert SPEC.local
    assert SPEC.missing_credentials(settings) is None
    assert not SPEC.credentials_set(settings)  # Ollama takes no key
    assert isinstance(SPEC.make_wire(SPEC, config), OllamaWire)


def test_an_openai_style_v1_base_url_still_reaches_the_native_api() -> None:
    assert wire("http://localhost:11434/v1/").root == "http://localhost:11434"
