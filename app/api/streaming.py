"""Relaying a provider's stream as server-sent events, for every streaming endpoint.

The first chunk is awaited before the response starts, so a failure to start is an HTTP
error status; a failure after that becomes an in-stream error event. Whatever ends the
relay (its end, an error, the client going away) closes the upstream request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.services.llm.errors import LLMError
from app.services.llm.protocol import StreamChunk

logger = logging.getLogger("app.api")

RenderChunk = Callable[[StreamChunk], Iterable[ServerSentEvent]]
RenderError = Callable[[str, str], ServerSentEvent]  # (error type, message) -> event


async def sse_response(
    chunks: AsyncIterator[StreamChunk],
    render: RenderChunk,
    render_error: RenderError,
    *,
    opening: Sequence[ServerSentEvent] = (),
    closing: Sequence[ServerSentEvent] = (),
    sep: str | None = None,
) -> EventSourceResponse:
    """An SSE response relaying `chunks`: `opening`, `render(chunk)` for each, `closing`."""
    first = await anext(chunks)  # raises here (an HTTP status) if the stream cannot start
    relay = _relay(first, chunks, render, render_error, opening, closing)
    return EventSourceResponse(relay, ping=15, sep=sep)


async def _relay(
    first: StreamChunk,
    chunks: AsyncIterator[StreamChunk],
    render: RenderChunk,
    render_error: RenderError,
    opening: Sequence[ServerSentEvent],
    closing: Sequence[ServerSentEvent],
) -> AsyncIterator[ServerSentEvent]:
    try:
        for event in opening:
            yield event
        chunk: StreamChunk | None = first
        while chunk is not None:
            for event in render(chunk):
                yield event
            chunk = await anext(chunks, None)
        for event in closing:
            yield event
    except Exception as exc:
        yield render_error(*stream_failure(exc))
    finally:
        # Runs on client disconnect too: close the upstream request even while cancelled.
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await chunks.aclose()  # type: ignore[attr-defined]


def stream_failure(exc: Exception) -> tuple[str, str]:
    """The error type and message to send in-stream: the LLM error's public message (the
    relay does not know who listens; the provider logged the whole one), or a generic one
    for a bug (logged with its traceback, never sent)."""
    if isinstance(exc, LLMError):
        return exc.kind, exc.public_message
    logger.exception("stream failed after it began", exc_info=exc)
    return "internal_error", "Internal server error"
