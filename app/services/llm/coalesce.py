"""Admissions of one scope coalesced within a process: one statement grants many.

Concurrent calls of one key all update the same counter rows, so on a database they queue
on one row lock (or one writer) and each pays a round trip. Here the calls waiting to be
admitted with the same checks (same keys, limits and windows) join one batch: while one
statement is in flight, the next calls wait, and then a single statement asks for all of
them at once. The store grants `min(waiting, room)` atomically (all of a request's limits
must grant it), so limits stay exact and no permit is taken that no call uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from app.services.llm.per_loop import PerLoop

Reads = tuple[tuple[str, int], ...]
Takes = tuple[tuple[str, int, float], ...]
Grant = Callable[[Reads, Takes, int], Awaitable[tuple[int, int | None]]]
"""(reads, takes, n) → (how many of the n are admitted, the index of the check that
refused the others or None)."""


class Coalescer:
    """Batches concurrent `admit`s with identical checks into one call of `grant`."""

    def __init__(self, grant: Grant) -> None:
        self._grant = grant
        self._queues: PerLoop[dict[tuple[Reads, Takes], list[asyncio.Future[int | None]]]] = (
            PerLoop(dict)
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def admit(
        self, reads: Sequence[tuple[str, int]], takes: Sequence[tuple[str, int, float]]
    ) -> int | None:
        """Like `Counters.admit`: None if admitted, else the index of the refusing check."""
        checks = (tuple(reads), tuple(takes))
        queues = self._queues.get()
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        queue = queues.get(checks)
        if queue is not None:  # a batch is in flight: join the next one
            queue.append(future)
        else:
            queues[checks] = [future]
            task = asyncio.get_running_loop().create_task(self._drain(queues, checks))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(
        self,
        queues: dict[tuple[Reads, Takes], list[asyncio.Future[int | None]]],
        checks: tuple[Reads, Takes],
    ) -> None:
        try:
            while batch := [f for f in queues[checks] if not f.done()]:  # done: cancelled
                queues[checks] = []
                try:
                    granted, refused = await self._grant(*checks, len(batch))
                except Exception as exc:
                    for future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for index, future in enumerate(batch):
                    if not future.done():  # cancelled in flight: its permit is spent
                        future.set_result(None if index < granted else refused)
        finally:
            del queues[checks]
