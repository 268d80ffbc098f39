"""A cap on concurrent requests per upstream: excess waits a bounded time, then is refused.

LM Studio runs a model on one machine; a burst beyond what it can serve only queues inside
it and times out. Queuing here instead keeps the wait bounded and answers 429 with a
Retry-After when it is exceeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.services.llm.errors import LLMOverloadedError
from app.services.llm.per_loop import PerLoop

_semaphores: PerLoop[dict[tuple[str, int], asyncio.Semaphore]] = PerLoop(dict)


@asynccontextmanager
async def upstream_slot(
    base_url: str, *, limit: int, wait: float, name: str, provider: str
) -> AsyncIterator[None]:
    """Hold one of `limit` slots for `base_url` while the body runs."""
    per_loop = _semaphores.get()
    semaphore = per_loop.get((base_url, limit))
    if semaphore is None:
        semaphore = per_loop[(base_url, limit)] = asyncio.Semaphore(limit)
    try:
        if semaphore.locked():  # only a request that has to queue pays for a timer
            async with asyncio.timeout(wait):
                await semaphore.acquire()
        else:
            await semaphore.acquire()  # a free slot: returns without suspending
    except TimeoutError:
        raise LLMOverloadedError(
            f"{name} at {base_url} is busy: {limit} requests are running and this one waited "
            f"{wait:g} s for a turn; try again shortly or raise LLM_MAX_CONCURRENCY",
            provider=provider,
            upstream=base_url,
            retry_after=max(1.0, wait / 2),
        ) from None
    try:
        yield
    finally:
        semaphore.release()
