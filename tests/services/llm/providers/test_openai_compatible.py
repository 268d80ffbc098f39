"""Our own OpenAI-wire client: reading SSE however the bytes arrive, an upstream's error text
in each shape it comes in, and a finished stream's connection going back to the pool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from app.services.llm import get_llm_service_with_overrides
from app.services.llm.providers.clients import close_clients
from app.services.llm.providers.openai_compatible import MAX_LINE, SSEDecoder, error_message
from tests.conftest import LLMEnv
from tests.upstream import StandInServer

MODEL = "llama-3.2-3b-instruct"

# Every shape of SSE a server may send: CRLF and LF line ends, a comment (OpenRouter's
# keep-alive), named events, fields we skip, data with and without the space, an event of
# two data lines, and `[DONE]`.
STREAM = (
    b": OPENROUTER PROCESSING\r\n\r\n"
    b'data: {"n": 1}\r\n\r\n'
    b"event: message\nid: 7\nretry: 100\n"
    b'data:{"n": 2}\n\n'
    b'data: {"n":\ndata: 3}\n\n'
    b"\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [b'{"n": 1}', b'{"n": 2}', b'{"n":\n3}', b"[DONE]"]


def test_sse_events_are_the_same_however_the_bytes_are_split() -> None:
    whole = SSEDecoder().feed(STREAM)
    assert whole == EVENTS
    for cut in range(1, len(STREAM)):
        decoder = SSEDecoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == EVENTS, cut
    decoder = SSEDecoder()
    assert [event for byte in STREAM for event in decoder.feed(bytes([byte]))] == EVENTS


def test_an_event_not_yet_ended_by_a_blank_line_is_not_read() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"n": 1}\n') == []
    assert decoder.feed(b"\n") == [b'{"n": 1}']


def test_a_line_over_the_limit_is_refused() -> None:
    decoder = SSEDecoder()
    with pytest.raises(ValueError, match="a stream line over 1024 KiB"):
        decoder.feed(b"data: " + b"x" * MAX_LINE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "No models loaded"}', "No models loaded"),  # LM Studio
        (b'{"error": {"message": "Bad key", "type": "auth"}}', "Bad key"),  # OpenAI
        (b'{"message": "at the top"}', "at the top"),
        (b'{"error": {"error": "nested"}}', "nested"),
        (b"  upstream exploded \n", "upstream exploded"),  # not JSON: the text, stripped
        (b"[1, 2]", "[1, 2]"),  # JSON without a message: the body as it came
        (b"", ""),
        (b"null", "null"),
    ],
)
def test_the_error_text_is_read_from_each_shape_of_error_body(body: bytes, message: str) -> None:
    assert error_message(body, 500) == message


def _stream_then_end(ports: list[int], end_after: float) -> Callable[..., Any]:
    """A stream whose body ends `end_after` seconds after `[DONE]` (in a write of its own, as
    a server does); records the client's port of each request."""

    async def handler(request: web.Request, _record: object) -> web.StreamResponse:
        assert request.transport is not None
        ports.append(request.transport.get_extra_info("peername")[1])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for text, finish in (("Hello", None), (None, "stop")):
            delta = {"content": text} if text else {}
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            await response.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await asyncio.sleep(end_after)
        await response.write_eof()
        return response

    return handler


async def _stream_twice(llm_env: LLMEnv, upstream: StandInServer, end_after: float) -> list[int]:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    llm = (await get_llm_service_with_overrides(provider="lmstudio")).service
    ports: list[int] = []
    upstream.enqueue(_stream_then_end(ports, end_after), times=2)
    # Tests share one event loop, and with it the pooled connections earlier tests left idle:
    # with those, the second call could reuse another idle connection than the first one's.
    await close_clients()
    for _ in range(2):
        assert [chunk async for chunk in llm.stream_response("hi")] == ["Hello"]
    return ports


async def test_a_finished_stream_returns_its_connection_to_the_pool(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    # The body's end comes in a write of its own right after `[DONE]`: it is waited for, so
    # the next call reuses the connection instead of opening one.
    first, second = await _stream_twice(llm_env, upstream, end_after=0.0)
    assert first == second


async def test_a_body_left_open_after_done_does_not_hold_the_stream(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    # The stream still ends (its finish reason came before `[DONE]`); the connection, whose
    # body never ended, is dropped rather than reused.
    first, second = await _stream_twice(llm_env, upstream, end_after=1.0)
    assert first != second


async def test_the_proxy_the_environment_names_is_used(
    llm_env: LLMEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the `openai` SDK honoured HTTP_PROXY: the upstream's host is never resolved or
    # connected to, only the proxy, which answers here itself.
    seen: list[tuple[str, str]] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append((request.headers["Host"], request.path))
        message = {"role": "assistant", "content": "via the proxy"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response({"model": MODEL, "choices": [choice]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        port = runner.addresses[0][1]
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        # A host of its own: pooled sessions read the environment once, when they open.
        upstream = f"upstream.invalid:{port}"
        llm_env.set(
            lmstudio_model=MODEL, lmstudio_max_retries=0, lmstudio_base_url=f"http://{upstream}/v1"
        )
        llm = (await get_llm_service_with_overrides(provider="lmstudio")).service
        assert await llm.get_response("hi") == "via the proxy"
        assert (upstream, "/v1/chat/completions") in seen
    finally:
        await runner.cleanup()
