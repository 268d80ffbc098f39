"""Relaying a provider's stream as server-sent events, for every streaming endpoint.

The response is handed to the server at once and made ready (its watcher started) while
the upstream thinks; its headers go out when the stream's first chunk arrives. That is the
upstream's first text, or earlier the service's word that the upstream accepted the
request (`LLMService.stream_chunks` may yield an empty chunk then). A failure before that
is raised to the app's error handlers, so it keeps its HTTP status; a failure after it
becomes an in-stream error event. Whatever ends the relay (its end, an error, the client
going away) closes the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence

from sse_starlette import ServerSentEvent
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.services.llm.errors import LLMError
from app.services.llm.protocol import StreamChunk

logger = logging.getLogger("app.api")

RenderChunk = Callable[[StreamChunk], Iterable[ServerSentEvent]]
RenderError = Callable[[str, str], ServerSentEvent]  # (error type, message) -> event

PING_SECONDS = 15.0
"""A comment line this often keeps proxies from closing a quiet stream."""
CLOSE_SECONDS = 5.0
"""How long closing the upstream request may take once the relay ends."""


def sse_response(
    chunks: AsyncIterator[StreamChunk],
    render: RenderChunk,
    render_error: RenderError,
    *,
    opening: Sequence[ServerSentEvent] = (),
    closing: Sequence[ServerSentEvent] = (),
    sep: str = "\r\n",
) -> Response:
    """An SSE response relaying `chunks`: `opening`, `render(chunk)` for each, `closing`."""
    return EventStream(_relay(chunks, render, render_error, opening, closing), sep=sep)


class EventStream(Response):
    """A `text/event-stream` response that starts with its first event (an error raised
    before then propagates, so that the app answers it with a status) and ends quietly,
    closing its events, when the client goes away."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], *, sep: str = "\r\n") -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        # sse-starlette's headers: caches and buffering proxies stay out of the way.
        self.init_headers(
            {"Cache-Control": "no-store", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
        )
        self.ping = ServerSentEvent(comment="ping", sep=sep).encode()
        self.started = self.finished = self.client_left = False
        self.relaying = True  # the watcher may cancel the relay while this holds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        watcher = asyncio.create_task(self._watch(receive, send, relay))
        try:
            try:
                first = await anext(self.events)  # may raise: nothing was sent yet
                start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                await send(start)
                self.started = True
                # An empty piece (a chunk without text, the first one included) is not
                # written: an empty chunk of a chunked body would end it.
                if first:
                    await send({"type": "http.response.body", "body": first, "more_body": True})
                async for events in self.events:
                    if events:
                        await send(
                            {"type": "http.response.body", "body": events, "more_body": True}
                        )
                self.finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                self.relaying = False
                watcher.cancel()
                async with asyncio.timeout(CLOSE_SECONDS):
                    await self.events.aclose()
        except asyncio.CancelledError:
            if not self.client_left:
                raise  # the server is stopping
            relay.uncancel()  # our own cancellation (see _watch): the stream just ends

    async def _watch(self, receive: Receive, send: Send, relay: asyncio.Task[None]) -> None:
        """Cancel the relay when the client disconnects; ping while the stream is quiet."""
        while True:
            try:
                async with asyncio.timeout(PING_SECONDS):
                    message = await receive()
            except TimeoutError:
                if self.started and not self.finished:
                    await send(_body(self.ping))
                continue
            if message["type"] == "http.disconnect":
                if self.relaying:
                    self.client_left = True
                    relay.cancel()
                return


def _body(data: bytes, *, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def _relay(
    chunks: AsyncIterator[StreamChunk],
    render: RenderChunk,
    render_error: RenderError,
    opening: Sequence[ServerSentEvent],
    closing: Sequence[ServerSentEvent],
) -> AsyncGenerator[bytes, None]:
    """The events of each chunk as one piece of bytes (one write), possibly empty; the
    first piece is yielded once the first chunk is there."""
    try:
        first = await anext(chunks)  # raises here (an HTTP status) if the stream cannot start
        try:
            yield _encoded([*opening, *render(first)])
            async for chunk in chunks:
                yield _encoded(render(chunk))
            yield _encoded(closing)
        except Exception as exc:
            yield render_error(*stream_failure(exc)).encode()
    finally:
        # Runs on client disconnect too (the relay is cancelled once, then may await).
        await chunks.aclose()  # type: ignore[attr-defined]


def _encoded(events: Iterable[ServerSentEvent]) -> bytes:
    return b"".join(event.encode() for event in events)


def stream_failure(exc: Exception) -> tuple[str, str]:
    """The error type and message to send in-stream: the LLM error's public message (the
    relay does not know who listens; the provider logged the whole one), or a generic one
    for a bug (logged with its traceback, never sent)."""
    if isinstance(exc, LLMError):
        return exc.kind, exc.public_message
    logger.exception("stream failed after it began", exc_info=exc)
    return "internal_error", "Internal server error"
