"""Closers registered on a loop run when `asyncio.run` (or a Runner) shuts that loop down."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import pytest

from app.core import loop_shutdown
from app.core.loop_shutdown import close_at_loop_shutdown


def test_closers_run_inside_their_loop_in_order_when_asyncio_run_ends() -> None:
    ran: list[tuple[str, asyncio.AbstractEventLoop]] = []

    def closer(name: str) -> loop_shutdown.Closer:
        async def close() -> None:
            await asyncio.sleep(0)  # a real await: it runs inside the loop
            ran.append((name, asyncio.get_running_loop()))

        return close

    async def main() -> asyncio.AbstractEventLoop:
        close_at_loop_shutdown("a", closer("a"))
        close_at_loop_shutdown("b", closer("b"))
        await asyncio.sleep(0)
        assert ran == [], "nothing closes while the loop runs"
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert ran == [("a", loop), ("b", loop)]


def test_one_closer_per_key_the_last_wins() -> None:
    ran: list[str] = []

    async def first() -> None:
        ran.append("first")

    async def second() -> None:
        ran.append("second")

    async def main() -> None:
        close_at_loop_shutdown("key", first)
        close_at_loop_shutdown("key", second)

    asyncio.run(main())
    assert ran == ["second"]


def test_a_closer_registered_first_runs_before_those_it_still_needs() -> None:
    ran: list[str] = []

    def closer(name: str) -> loop_shutdown.Closer:
        async def close() -> None:
            ran.append(name)

        return close

    async def main() -> None:
        close_at_loop_shutdown("engine", closer("engine"))
        close_at_loop_shutdown("pool", closer("pool"))
        close_at_loop_shutdown("buffer", closer("buffer"), first=True)

    asyncio.run(main())
    assert ran == ["buffer", "engine", "pool"]


def test_closers_run_after_the_tasks_left_behind_are_cancelled() -> None:
    events: list[str] = []

    async def left_behind() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            events.append("task cancelled")

    async def close() -> None:
        events.append("closed")

    async def main() -> None:
        close_at_loop_shutdown("pool", close)
        asyncio.get_running_loop().create_task(left_behind())
        await asyncio.sleep(0)

    asyncio.run(main())
    assert events == ["task cancelled", "closed"]


def test_a_failing_closer_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def broken() -> None:
        raise OSError("socket already gone")

    async def fine() -> None:
        ran.append("fine")

    async def main() -> None:
        close_at_loop_shutdown("broken", broken)
        close_at_loop_shutdown("fine", fine)

    with caplog.at_level(logging.WARNING, logger="app.core.loop_shutdown"):
        asyncio.run(main())
    assert ran == ["fine"]
    assert "closing 'broken' at event-loop shutdown failed: OSError" in caplog.text
    assert "socket already gone" not in caplog.text


def test_each_loop_closes_its_own_and_is_not_kept_alive() -> None:
    closed_on: list[asyncio.AbstractEventLoop] = []

    async def close() -> None:
        closed_on.append(asyncio.get_running_loop())

    async def main() -> weakref.ref[asyncio.AbstractEventLoop]:
        close_at_loop_shutdown("pool", close)
        return weakref.ref(asyncio.get_running_loop())

    with asyncio.Runner() as runner:
        first = runner.run(main())
    second = asyncio.run(main())
    assert len(closed_on) == 2
    assert closed_on[0] is not closed_on[1]
    closed_on.clear()
    gc.collect()
    assert first() is None, "a shut-down loop must not be kept alive by its closers"
    assert second() is None


def test_the_closers_run_at_shutdown_asyncgens_the_step_asyncio_run_adds() -> None:
    # A loop driven by hand (`run_until_complete`, then `close()`) skips that step, and with
    # it the closers: the documented limit.
    ran: list[str] = []

    async def close() -> None:
        ran.append("closed")

    async def main() -> None:
        close_at_loop_shutdown("pool", close)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        assert ran == []
        loop.run_until_complete(loop.shutdown_asyncgens())
        assert ran == ["closed"]
    finally:
        loop.close()


def test_needs_a_running_loop() -> None:
    async def close() -> None:
        pass

    with pytest.raises(RuntimeError):
        close_at_loop_shutdown("pool", close)
