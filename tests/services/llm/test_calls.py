"""The provider-neutral service's stream (`app.services.llm.calls`) over a scripted wire:
the upstream's acceptance is passed on once, before any text, across retries."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Sequence

import pytest

from app.core.config import LLMProvider, get_settings, set_settings
from app.services.llm import build_messages
from app.services.llm.calls import ProviderService
from app.services.llm.errors import LLMConnectionError, LLMError
from app.services.llm.factory import build_service
from app.services.llm.protocol import (
    Capabilities,
    ChatRequest,
    Completion,
    ModelInfo,
    StreamChunk,
    Usage,
)
from tests.conftest import test_settings as settings_for

ACCEPTED = StreamChunk()
DONE = StreamChunk(finish_reason="stop", usage=Usage(1, 2))
Attempt = Sequence[StreamChunk | LLMError]


class ScriptedWire:
    """A wire whose n-th attempt yields the n-th script's chunks (raising its errors)."""

    capabilities = Capabilities()

    def __init__(self, *attempts: Attempt) -> None:
        self.attempts = list(attempts)

    async def complete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        for item in self.attempts[request.attempt]:
            if isinstance(item, LLMError):
                raise item
            yield item

    async def list_models(self) -> list[ModelInfo]:
        return []


@pytest.fixture(autouse=True)
def _settings() -> Iterator[None]:
    original = get_settings()
    set_settings(settings_for("sqlite+aiosqlite:///:memory:", lmstudio_max_retries=2))
    yield
    set_settings(original)


async def _streamed(wire: ScriptedWire) -> list[StreamChunk]:
    built = build_service(LLMProvider.LMSTUDIO, "some-model")
    service = ProviderService(built.spec, built.config, retry_backoff=0, wire=wire)
    return [chunk async for chunk in service.stream_chunks(build_messages("hi"))]


async def test_the_upstreams_acceptance_is_passed_on_before_the_text() -> None:
    chunks = await _streamed(ScriptedWire([ACCEPTED, StreamChunk(text="hi"), ACCEPTED, DONE]))
    assert [c.text for c in chunks] == ["", "hi", ""]
    assert chunks[0] == StreamChunk()
    assert chunks[-1].finish_reason == "stop"


async def test_acceptance_is_passed_on_once_across_retries() -> None:
    refused = LLMConnectionError("broken off before the first text")
    wire = ScriptedWire([ACCEPTED, refused], [ACCEPTED, StreamChunk(text="hi"), DONE])
    chunks = await _streamed(wire)
    assert [(c.text, c.finish_reason) for c in chunks] == [("", None), ("hi", None), ("", "stop")]


async def test_a_wire_that_does_not_say_so_streams_as_before() -> None:
    chunks = await _streamed(ScriptedWire([StreamChunk(text="hi"), DONE]))
    assert [(c.text, c.finish_reason) for c in chunks] == [("hi", None), ("", "stop")]
