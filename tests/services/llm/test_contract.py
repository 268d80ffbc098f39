"""One contract, every provider: the same calls and faults against each provider's wire-level
stand-in (real HTTP on loopback, the real client library), through the provider-neutral
service. A provider-specific behaviour belongs in tests/services/llm/providers/; what is
here must hold for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar, Protocol

import pytest
from pydantic import BaseModel

from app.core.config import LLMProvider, get_settings, set_settings
from app.services.llm import (
    PROVIDERS,
    LLMConnectionError,
    LLMError,
    LLMUpstreamError,
    ProviderService,
    StreamChunk,
    build_messages,
    close_clients,
)
from app.services.llm.errors import LLMBadRequestError, LLMRateLimitError
from app.services.llm.structured import forget_modes
from tests.conftest import test_settings as settings_for
from tests.upstream import StandInServer, unused_url
from tests.upstream.bedrock_server import ACCESS_KEY, SECRET_KEY, BedrockStandIn
from tests.upstream.ollama_server import OllamaStandIn

MODEL = "contract-model"


class City(BaseModel):
    name: str
    country: str


class StandIn(Protocol):
    """What the contract asks of each provider's stand-in."""

    settings: dict[str, object]
    """The one setting that points the provider at the stand-in."""
    env: dict[str, str]
    """Process environment the provider's client library needs (Bedrock's credentials)."""
    model: str
    """A model the stand-in lists."""
    sends_retry_after: bool

    def reply(self, text: str) -> None: ...
    def reply_structured(self, value: dict[str, Any]) -> None: ...
    def fail(self, status: int, retry_after: str | None = None) -> None: ...
    def cut(self, after_chunks: int) -> None: ...
    def slow_stream(self) -> None: ...
    def chat_count(self) -> int: ...
    async def disconnected(self) -> bool: ...
    def reset(self) -> None: ...


class OpenAIWireStandIn:
    """LM Studio and OpenAI: the stand-in that speaks OpenAI's wire."""

    env: dict[str, str] = {}  # noqa: RUF012 -- read only
    model = MODEL
    sends_retry_after = True

    def __init__(self, server: StandInServer, prefix: str) -> None:
        self.server = server
        self.settings: dict[str, object] = {f"{prefix}_base_url": server.base_url}

    def reply(self, text: str) -> None:
        self.server.reply_json(text)

    def reply_structured(self, value: dict[str, Any]) -> None:
        self.server.reply_json(value)

    def fail(self, status: int, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after else None
        self.server.fail(status, headers=headers)

    def cut(self, after_chunks: int) -> None:
        self.server.stream_cut(after_chunks)

    def slow_stream(self) -> None:
        self.server.slow_stream(n_chunks=200, interval=0.05)

    def chat_count(self) -> int:
        return len(self.server.chat_requests)

    async def disconnected(self) -> bool:
        return await self.server.wait_for_disconnect_async(timeout=2)

    def reset(self) -> None:
        self.server.reset()


class OllamaContractStandIn:
    env: dict[str, str] = {}  # noqa: RUF012 -- read only
    model = MODEL
    sends_retry_after = True

    def __init__(self, server: OllamaStandIn) -> None:
        self.server = server
        self.settings: dict[str, object] = {"ollama_base_url": server.base_url}

    def reply(self, text: str) -> None:
        self.server.reply(text)

    def reply_structured(self, value: dict[str, Any]) -> None:
        self.server.reply(json.dumps(value))

    def fail(self, status: int, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after else None
        self.server.fail(status, "failure", headers=headers)

    def cut(self, after_chunks: int) -> None:
        self.server.cut(after_chunks)

    def slow_stream(self) -> None:
        self.server.reply(" ".join(["word"] * 200), interval=0.05)

    def chat_count(self) -> int:
        return len(self.server.chat_requests)

    async def disconnected(self) -> bool:
        return await asyncio.to_thread(self.server.disconnected.wait, 2)

    def reset(self) -> None:
        self.server.reset()


class BedrockContractStandIn:
    model = "amazon.nova-lite-v1:0"
    sends_retry_after = False  # Bedrock's ThrottlingException carries no Retry-After
    codes: ClassVar[dict[int, str]] = {
        400: "ValidationException",
        429: "ThrottlingException",
        503: "ServiceUnavailableException",
    }

    def __init__(self, server: BedrockStandIn) -> None:
        self.server = server
        self.settings: dict[str, object] = {"bedrock_endpoint_url": server.url}
        self.env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }

    def reply(self, text: str) -> None:
        self.server.reply(text)

    def reply_structured(self, value: dict[str, Any]) -> None:
        self.server.reply_tool(value)  # the forced tool: this model has no native schema mode

    def fail(self, status: int, retry_after: str | None = None) -> None:
        self.server.fail(self.codes[status])

    def cut(self, after_chunks: int) -> None:
        self.server.cut(after_chunks)

    def slow_stream(self) -> None:
        self.server.stall(5, after_deltas=1)

    def chat_count(self) -> int:
        return len(self.server.converse_requests)

    async def disconnected(self) -> bool:
        return await self.server.wait_for_disconnect(2)

    def reset(self) -> None:
        self.server.reset()


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[dict[LLMProvider, StandIn]]:
    with contextlib.ExitStack() as stack:
        lmstudio = stack.enter_context(StandInServer(models=[MODEL]))
        openai = stack.enter_context(StandInServer(models=[MODEL], error_style="openai"))
        # OpenRouter's own behaviours (attribution, credits, error chunks) are tested with
        # its own stand-in in providers/; the contract needs only OpenAI's wire.
        openrouter = stack.enter_context(StandInServer(models=[MODEL], error_style="openai"))
        ollama = stack.enter_context(OllamaStandIn(models={MODEL: 8192}))
        bedrock = stack.enter_context(BedrockStandIn())
        yield {
            LLMProvider.BEDROCK: BedrockContractStandIn(bedrock),
            LLMProvider.LMSTUDIO: OpenAIWireStandIn(lmstudio, "lmstudio"),
            LLMProvider.OPENAI: OpenAIWireStandIn(openai, "openai"),
            LLMProvider.OPENROUTER: OpenAIWireStandIn(openrouter, "openrouter"),
            LLMProvider.OLLAMA: OllamaContractStandIn(ollama),
        }


Make = Callable[..., ProviderService]


@pytest.fixture(params=[p for p in LLMProvider if p in PROVIDERS], ids=str)
def provider(request: pytest.FixtureRequest) -> LLMProvider:
    provider: LLMProvider = request.param
    return provider


@pytest.fixture
async def stand_in(
    stand_ins: dict[LLMProvider, StandIn], provider: LLMProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StandIn]:
    if provider not in stand_ins:
        pytest.fail(f"{provider} has no stand-in in the contract suite: add one")
    stand_in = stand_ins[provider]
    for name, value in stand_in.env.items():
        monkeypatch.setenv(name, value)
    stand_in.reset()
    forget_modes()
    original = get_settings()
    yield stand_in
    await close_clients()
    set_settings(original)
    stand_in.reset()


@pytest.fixture
def make(provider: LLMProvider, stand_in: StandIn) -> Make:
    """The provider's service, pointed at its stand-in, with `overrides` on its settings."""

    def build(*, unreachable: bool = False, **overrides: Any) -> ProviderService:
        prefix = provider.value
        values: dict[str, object] = {
            "openai_api_key": "sk-test",
            "openrouter_api_key": "sk-or-test",
            f"{prefix}_timeout": 2,
            f"{prefix}_max_retries": 1,
            **stand_in.settings,
            **{f"{prefix}_{key}": value for key, value in overrides.items()},
        }
        if unreachable:  # the stand-in's address setting, at a port nothing listens on
            (url_setting,) = stand_in.settings
            values[url_setting] = unused_url().removesuffix("/v1")
        settings = settings_for("sqlite+aiosqlite:///:memory:", **values)
        set_settings(settings)
        spec = PROVIDERS[provider]
        config = spec.config_from(settings, stand_in.model)
        return ProviderService(spec, config, retry_backoff=0.01)

    return build


async def test_text(make: Make, stand_in: StandIn, provider: LLMProvider) -> None:
    stand_in.reply("hello from the stand-in")
    completion = await make().complete(build_messages("hi"))
    assert completion.text == "hello from the stand-in"
    assert completion.provider == provider.value
    assert completion.model
    assert completion.finish_reason == "stop"
    assert completion.usage.completion_tokens > 0


async def test_stream(make: Make, stand_in: StandIn, provider: LLMProvider) -> None:
    stand_in.reply("one two three four")
    chunks = [chunk async for chunk in make().stream_chunks(build_messages("hi"))]
    text = "".join(chunk.text for chunk in chunks)
    assert text.split() == ["one", "two", "three", "four"]
    assert len([c for c in chunks if c.text]) > 1  # it streamed, not one block
    last = chunks[-1]
    assert (last.finish_reason, last.provider) == ("stop", provider.value)
    assert last.usage is not None


async def test_structured(make: Make, stand_in: StandIn) -> None:
    stand_in.reply_structured({"name": "Paris", "country": "France"})
    city = await make().get_structured_response("The capital of France?", City)
    assert city == City(name="Paris", country="France")


async def test_discovery_lists_the_model(make: Make, stand_in: StandIn) -> None:
    models = await make().list_models()
    assert stand_in.model in [m.id for m in models]


async def test_a_bad_request_is_the_callers_400_and_not_retried(
    make: Make, stand_in: StandIn
) -> None:
    stand_in.fail(400)
    with pytest.raises(LLMBadRequestError) as raised:
        await make().complete(build_messages("hi"))
    assert raised.value.status_code == 400
    assert stand_in.chat_count() == 1


async def test_a_server_error_is_retried_then_answered(make: Make, stand_in: StandIn) -> None:
    stand_in.fail(503)
    stand_in.reply("second time lucky")
    completion = await make().complete(build_messages("hi"))
    assert completion.text == "second time lucky"
    assert stand_in.chat_count() == 2


async def test_server_errors_beyond_the_retries_are_a_502(make: Make, stand_in: StandIn) -> None:
    stand_in.fail(503)
    stand_in.fail(503)
    with pytest.raises(LLMUpstreamError) as raised:
        await make().complete(build_messages("hi"))
    assert raised.value.status_code == 502
    assert stand_in.chat_count() == 2


async def test_rate_limiting_is_retried_after_the_wait_asked_for(
    make: Make, stand_in: StandIn
) -> None:
    stand_in.fail(429, retry_after="0")
    stand_in.fail(429, retry_after="0")
    with pytest.raises(LLMRateLimitError) as raised:
        await make().complete(build_messages("hi"))
    assert raised.value.retry_after == (0 if stand_in.sends_retry_after else None)
    assert stand_in.chat_count() == 2


async def test_a_refused_connection_is_a_503_naming_the_provider(
    make: Make, provider: LLMProvider
) -> None:
    service = make(unreachable=True, max_retries=0)
    with pytest.raises(LLMConnectionError) as raised:
        await service.complete(build_messages("hi"))
    assert raised.value.status_code == 503
    assert PROVIDERS[provider].display_name in raised.value.public_message


async def test_a_stream_broken_before_any_text_is_retried(make: Make, stand_in: StandIn) -> None:
    stand_in.cut(0)
    stand_in.reply("whole answer")
    text = "".join([c.text async for c in make().stream_chunks(build_messages("hi"))])
    assert text.split() == ["whole", "answer"]
    assert stand_in.chat_count() == 2


async def test_a_stream_broken_after_text_is_an_error_not_a_retry(
    make: Make, stand_in: StandIn
) -> None:
    stand_in.cut(3)
    received: list[str] = []

    async def read() -> None:
        async for chunk in make().stream_chunks(build_messages("hi")):
            received.append(chunk.text)

    with pytest.raises(LLMError):
        await read()
    assert "".join(received)
    assert stand_in.chat_count() == 1


async def test_closing_a_stream_early_closes_the_upstream_connection(
    make: Make, stand_in: StandIn
) -> None:
    stand_in.slow_stream()
    chunks = make().stream_chunks(build_messages("hi"))
    assert await anext(chunks) == StreamChunk()  # the upstream accepted
    assert (await anext(chunks)).text  # the first text: the reply is under way
    await chunks.aclose()
    assert await stand_in.disconnected()
