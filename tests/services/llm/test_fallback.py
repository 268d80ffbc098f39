"""The fallback chain against two stand-in upstreams: which faults move a call on, which
never do, and that a stream moves only before its first text."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from app.core.config import LLMProvider, get_settings, set_settings
from app.services.llm import LLMError, build_messages, generate_structured, with_fallback
from app.services.llm.factory import build_service
from app.services.llm.fallback import FallbackService
from app.services.llm.structured import forget_modes
from tests.conftest import test_settings as settings_for
from tests.upstream import StandInServer, unused_url
from tests.upstream.server import unanswered_connect_url

LOCAL_MODEL = "llama-3.2-3b-instruct"
CLOUD_MODEL = "gpt-4o-mini"


class City(BaseModel):
    name: str
    country: str


@pytest.fixture(scope="module")
def second_upstream() -> Iterator[StandInServer]:
    """The stand-in for the fallback provider (OpenAI's wire)."""
    with StandInServer(models=[CLOUD_MODEL], error_style="openai") as server:
        yield server


@dataclass
class Chain:
    primary: StandInServer
    fallback: StandInServer

    def service(self, **primary_settings: object) -> FallbackService:
        """LM Studio (primary) then OpenAI, with `primary_settings` over the defaults."""
        values: dict[str, object] = {
            "lmstudio_base_url": self.primary.base_url,
            "lmstudio_max_retries": 0,
            "lmstudio_timeout": 2,
            "openai_base_url": self.fallback.base_url,
            "openai_api_key": "sk-test",
            "openai_max_retries": 0,
        }
        set_settings(settings_for("sqlite+aiosqlite:///:memory:", **{**values, **primary_settings}))
        return FallbackService(
            [
                build_service(LLMProvider.LMSTUDIO, LOCAL_MODEL),
                build_service(LLMProvider.OPENAI, CLOUD_MODEL),
            ]
        )


@pytest.fixture
def chain(upstream_server: StandInServer, second_upstream: StandInServer) -> Iterator[Chain]:
    original = get_settings()
    upstream_server.reset()
    second_upstream.reset()
    forget_modes()
    yield Chain(upstream_server, second_upstream)
    set_settings(original)
    upstream_server.reset()
    second_upstream.reset()


Ask = Callable[[FallbackService], Awaitable[tuple[str, str]]]


async def _text(service: FallbackService) -> tuple[str, str]:
    completion = await service.complete(build_messages("hello"))
    return completion.provider, completion.model


async def _structured(service: FallbackService) -> tuple[str, str]:
    result = await with_fallback(
        service, lambda member: generate_structured(member, "a city", City)
    )
    assert isinstance(result.value, City)
    return result.provider, result.model


async def _stream(service: FallbackService) -> tuple[str, str]:
    last = None
    text = ""
    async for chunk in service.stream_chunks(build_messages("hello")):
        text += chunk.text
        last = chunk
    assert text
    assert last is not None
    assert last.finish_reason
    return last.provider, last.model


ASKS: dict[str, Ask] = {"text": _text, "structured": _structured, "stream": _stream}


def _fallbacks(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "llm_fallbacks_total", {"from": "lmstudio", "to": "openai", "reason": reason}
    )
    return value or 0.0


@contextlib.asynccontextmanager
async def _busy(service: FallbackService) -> AsyncIterator[None]:
    """Hold the primary's only slot with a slow call while the block runs."""
    primary = service.chain[0]
    holder = asyncio.create_task(primary.complete(build_messages("hold")))
    await asyncio.sleep(0.2)
    try:
        yield
    finally:
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError, LLMError):
            await holder


@pytest.mark.parametrize("ask", ASKS)
@pytest.mark.parametrize("fault", ["refused", "429", "503", "connect_timeout", "queue_full"])
async def test_a_fault_before_any_text_moves_to_the_next_provider(
    chain: Chain, ask: str, fault: str
) -> None:
    overrides: dict[str, object] = {}
    if fault == "refused":
        overrides["lmstudio_base_url"] = unused_url()
    elif fault == "429":
        chain.primary.fail(429, headers={"Retry-After": "0"})
    elif fault == "503":
        chain.primary.fail(503)
    elif fault == "queue_full":
        overrides.update(llm_max_concurrency=1, llm_queue_timeout=0.1)
        chain.primary.delay(1.5)
    expected_reason = {
        "refused": "llm_connection_error",
        "429": "llm_rate_limit_error",
        "503": "llm_upstream_error",
        "connect_timeout": "llm_timeout_error",
        "queue_full": "llm_overloaded",
    }[fault]
    before = _fallbacks(expected_reason)
    async with contextlib.AsyncExitStack() as stack:
        if fault == "connect_timeout":
            url = stack.enter_context(unanswered_connect_url())
            overrides.update(lmstudio_base_url=url, lmstudio_timeout=1)
        service = chain.service(**overrides)
        if fault == "queue_full":
            await stack.enter_async_context(_busy(service))
        provider, model = await ASKS[ask](service)
    assert (provider, model) == ("openai", CLOUD_MODEL)
    assert len(chain.fallback.chat_requests) >= 1
    assert _fallbacks(expected_reason) == before + 1


@pytest.mark.parametrize("ask", ASKS)
@pytest.mark.parametrize("fault", ["400", "401", "read_timeout", "model_not_found"])
async def test_a_fault_about_the_request_or_during_generation_never_moves(
    chain: Chain, ask: str, fault: str
) -> None:
    overrides: dict[str, object] = {}
    if fault == "400":
        chain.primary.fail(400, times=None)
    elif fault == "401":
        chain.primary.fail(401)
    elif fault == "read_timeout":
        overrides["lmstudio_timeout"] = 1
        chain.primary.delay(2.5)
    else:
        chain.primary.fail(404, {"error": "model 'x' not found"})
    service = chain.service(**overrides)
    with pytest.raises(LLMError) as raised:
        await ASKS[ask](service)
    assert raised.value.provider == "lmstudio"
    assert chain.fallback.chat_requests == []


async def test_a_healthy_primary_answers_itself(chain: Chain) -> None:
    service = chain.service()
    assert await _text(service) == ("lmstudio", LOCAL_MODEL)
    assert chain.fallback.chat_requests == []


async def test_a_stream_broken_after_its_first_text_ends_with_an_error_not_a_switch(
    chain: Chain,
) -> None:
    chain.primary.stream_cut(after_chunks=3)
    service = chain.service()
    received: list[str] = []

    async def read() -> None:
        async for chunk in service.stream_chunks(build_messages("hello")):
            received.append(chunk.text)

    with pytest.raises(LLMError, match="broke off"):
        await read()
    assert "".join(received)  # the caller had text: switching now would splice two answers
    assert chain.fallback.chat_requests == []


async def test_a_stream_broken_before_its_first_text_moves_on(chain: Chain) -> None:
    chain.primary.stream_cut(after_chunks=0)
    service = chain.service()
    assert await _stream(service) == ("openai", CLOUD_MODEL)


async def test_the_last_providers_error_is_the_one_raised(chain: Chain) -> None:
    chain.primary.fail(503)
    chain.fallback.fail(503)
    service = chain.service()
    with pytest.raises(LLMError) as raised:
        await _text(service)
    assert raised.value.provider == "openai"


def test_a_chain_needs_two_providers(chain: Chain) -> None:
    chain.service()
    with pytest.raises(ValueError, match="at least two"):
        FallbackService([build_service(LLMProvider.LMSTUDIO, LOCAL_MODEL)])
