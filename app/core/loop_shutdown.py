"""Close what an event loop opened when that loop shuts down, without the caller asking.

Pooled HTTP sessions and database connections belong to the loop that opened them, and a
script that ends with `asyncio.run(main())` never calls our close functions: its sessions
were then reported as "Unclosed client session" at exit. `asyncio.run()` (like
`asyncio.Runner`, uvicorn and pytest-asyncio, which use it) calls the documented
`loop.shutdown_asyncgens()` after cancelling the remaining tasks and before closing the
loop: every async generator still suspended on the loop is closed there, inside the loop.
So each loop that registers a closer gets one such generator, parked at its `yield`, whose
`finally` awaits the closers.

A loop closed without `shutdown_asyncgens()` (`run_until_complete` then `close()`) runs no
closer; `close_clients()` and `dispose_engine()` remain for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field

logger = logging.getLogger("app.core.loop_shutdown")

Closer = Callable[[], Awaitable[None]]


@dataclass
class _LoopClosers:
    closers: dict[Hashable, Closer] = field(default_factory=dict)
    # Held here because the loop keeps its async generators only by weak reference; a
    # collected guard would run its `finally` at once, closing everything too early.
    guard: AsyncGenerator[None, None] | None = None


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClosers] = (
    weakref.WeakKeyDictionary()
)


def close_at_loop_shutdown(key: Hashable, close: Closer, *, first: bool = False) -> None:
    """Await `close()` when the running loop shuts down; one closer per `key` (the last wins).

    Closers run in the order registered; with `first`, this one runs before those already
    registered (it still needs them: a buffer written through the pooled database engine).
    Must be called with a loop running (RuntimeError otherwise).
    """
    loop = asyncio.get_running_loop()
    entry = _loops.get(loop)
    if entry is None:
        entry = _loops[loop] = _LoopClosers()
        entry.guard = _guard(entry)
        # Advance it to its `yield` now, synchronously: the first step (`asend`) is where the
        # loop's first-iteration hook registers it for shutdown_asyncgens(), and the body
        # before the `yield` awaits nothing, so the step ends with StopIteration.
        with contextlib.suppress(StopIteration):
            entry.guard.asend(None).send(None)
    if first:
        entry.closers.pop(key, None)
        entry.closers = {key: close, **entry.closers}
    else:
        entry.closers[key] = close


async def _guard(entry: _LoopClosers) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        _loops.pop(asyncio.get_running_loop(), None)
        while entry.closers:  # in the order registered; a closer may register another
            key = next(iter(entry.closers))
            close = entry.closers.pop(key)
            try:
                await close()
            except Exception as exc:  # one failing closer must not keep the others open
                logger.warning(
                    "closing %r at event-loop shutdown failed: %s", key, type(exc).__name__
                )
