"""Reading a stream under the acceptance rule (`ProviderWire.stream`): a wire's first chunk,
and the service's, says that the upstream accepted the request (its status said 200)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from app.services.llm.protocol import StreamChunk


async def after_acceptance(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[StreamChunk]:
    """The chunks after the first, which must be the acceptance: an empty chunk (no text,
    no reasoning, no finish reason). A failure before it is raised as it comes."""
    first = await anext(chunks)
    assert first == StreamChunk(), f"the first chunk is not the acceptance: {first!r}"
    async for chunk in chunks:
        yield chunk
