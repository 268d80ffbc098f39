"""The SSE relay (`app.api.streaming`) over a real socket, fed by scripted chunk sources:
when its headers go out, what a failure becomes before and after, a client leaving early,
and pings on a quiet stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sse_starlette import ServerSentEvent
from starlette.responses import Response

from app.api import streaming
from app.api.errors import install_error_handlers
from app.api.streaming import sse_response
from app.services.llm.errors import LLMConnectionError, LLMUpstreamError
from app.services.llm.protocol import StreamChunk
from tests.api.llm_faults_support import MODEL
from tests.conftest import LLMEnv, serve_app
from tests.upstream import StandInServer

Source = Callable[[], AsyncIterator[StreamChunk]]


def _render(chunk: StreamChunk) -> Iterator[ServerSentEvent]:
    if chunk.text:
        yield ServerSentEvent(chunk.text, event="delta")
    if chunk.finish_reason:
        yield ServerSentEvent(chunk.finish_reason, event="done")


def _render_error(kind: str, message: str) -> ServerSentEvent:
    return ServerSentEvent(f"{kind}: {message}", event="error")


@asynccontextmanager
async def _relaying(source: Source) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose one route relays `source()`."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/stream")
    async def stream() -> Response:
        return sse_response(source(), _render, _render_error)

    running = await serve_app(app)
    try:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
            yield client
    finally:
        await running.stop()


async def test_headers_go_out_when_the_upstream_accepted_before_any_text() -> None:
    release = asyncio.Event()

    async def source() -> AsyncIterator[StreamChunk]:
        yield StreamChunk()  # the service's word that the upstream accepted
        await release.wait()  # the model thinks until the client has seen the headers
        yield StreamChunk(text="hello")
        yield StreamChunk(finish_reason="stop")

    async with _relaying(source) as client, client.stream("POST", "/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        release.set()
        body = (await response.aread()).decode()
    assert body == "event: delta\r\ndata: hello\r\n\r\nevent: done\r\ndata: stop\r\n\r\n"


async def test_a_failure_before_the_first_chunk_keeps_its_http_status() -> None:
    async def source() -> AsyncIterator[StreamChunk]:
        raise LLMConnectionError("LM Studio cannot be reached")
        yield StreamChunk()  # pragma: no cover

    async with _relaying(source) as client:
        response = await client.post("/stream")
    assert response.status_code == 503
    assert response.json() == {
        "detail": "LM Studio cannot be reached",
        "type": "llm_connection_error",
    }


async def test_a_failure_after_the_upstream_accepted_is_an_error_event() -> None:
    async def source() -> AsyncIterator[StreamChunk]:
        yield StreamChunk()
        raise LLMUpstreamError("LM Studio broke off")

    async with _relaying(source) as client:
        response = await client.post("/stream")
    assert response.status_code == 200
    assert response.text == "event: error\r\ndata: llm_upstream_error: LM Studio broke off\r\n\r\n"


async def test_a_client_leaving_before_the_first_chunk_closes_the_source() -> None:
    entered, closed = asyncio.Event(), asyncio.Event()

    async def source() -> AsyncIterator[StreamChunk]:
        entered.set()
        try:
            await asyncio.Event().wait()  # an upstream that has not answered yet
            yield StreamChunk(text="never")
        finally:
            closed.set()

    async with _relaying(source) as client:
        request = asyncio.create_task(client.post("/stream"))
        await asyncio.wait_for(entered.wait(), 5)
        request.cancel()  # the client gives up and closes its connection
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.wait_for(closed.wait(), 5)


async def test_a_quiet_stream_is_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "PING_SECONDS", 0.05)
    release = asyncio.Event()

    async def source() -> AsyncIterator[StreamChunk]:
        yield StreamChunk(text="hello")
        await release.wait()
        yield StreamChunk(finish_reason="stop")

    async with _relaying(source) as client, client.stream("POST", "/stream") as response:
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith(":"):
                assert line == ": ping"
                break
        release.set()
        rest = [line async for line in lines]
    assert "data: stop" in rest


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/llm/stream"])
async def test_a_client_leaving_while_the_model_reads_the_prompt_closes_the_upstream(
    client: httpx.AsyncClient,
    llm_env: LLMEnv,
    upstream: StandInServer,
    admin_headers: dict[str, str],
    path: str,
) -> None:
    llm_env.set(lmstudio_model=MODEL)
    upstream.slow_stream(n_chunks=3, interval=0.01, delay=30)  # no answer for 30 s
    body = {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if path.startswith("/api/"):
        del body["messages"], body["stream"]
    else:
        del body["prompt"]
    request = asyncio.create_task(client.post(path, json=body, headers=admin_headers))
    assert await asyncio.to_thread(upstream.wait_for_requests, 1, 5)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert await upstream.wait_for_disconnect_async(timeout=5)
