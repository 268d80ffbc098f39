"""The lifecycle the provider stand-ins share: an aiohttp app served from a daemon thread.

A subclass says what it serves in ``build_app()``; ``ThreadedApp`` gives it its own event
loop in a daemon thread, a socket on a free ``127.0.0.1`` port, ``start``/``stop`` and the
context manager::

    class EchoStandIn(ThreadedApp):
        def build_app(self) -> web.Application:
            app = web.Application()
            app.router.add_get("/", self._hello)
            return app

    with EchoStandIn() as srv:
        ...  # talk to f"http://127.0.0.1:{srv.port}"
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from abc import ABC, abstractmethod
from typing import Self

from aiohttp import web

__all__ = ["STARTUP_SECONDS", "ThreadedApp"]

STARTUP_SECONDS = 10.0
"""How long ``start()`` waits for the server to listen (and ``stop()`` for the thread)."""


class ThreadedApp(ABC):
    """An aiohttp app on a free 127.0.0.1 port, served by its own loop in a daemon thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0

    @abstractmethod
    def build_app(self) -> web.Application:
        """The app to serve (called on the server's own loop)."""

    @property
    def port(self) -> int:
        """The port it listens on (0 before the first start)."""
        return self._port

    # ── lifecycle ───────────────────────────────────────────────────────────

    def start(self) -> Self:
        """Bind a free port and serve in a background thread; returns self.

        Raises:
            RuntimeError: The server did not listen within ``STARTUP_SECONDS``, or failed to.
        """
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        name = type(self).__name__
        thread = threading.Thread(
            target=self._serve, args=(loop, ready, failure), name=name, daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        if not ready.wait(STARTUP_SECONDS):
            self.stop()
            raise RuntimeError(f"{name} did not start within {STARTUP_SECONDS:g} s")
        if failure:
            thread.join(STARTUP_SECONDS)
            self._loop = self._thread = None
            raise RuntimeError(f"{name} did not start: {failure[0]!r}") from failure[0]
        return self

    def stop(self) -> None:
        """Stop serving: the runner is cleaned up, the loop closed and the thread joined."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the thread has ended
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STARTUP_SECONDS)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ── the thread ──────────────────────────────────────────────────────────

    def _serve(
        self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # handed to start(), which raises it
            failure.append(exc)
            self._clean_up(loop)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            self._clean_up(loop)

    async def _listen(self) -> None:
        self._runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            handler_cancellation=True,  # a client hanging up cancels its handler
            shutdown_timeout=0.25,
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            sock.setblocking(False)
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]

    def _clean_up(self, loop: asyncio.AbstractEventLoop) -> None:
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                loop.run_until_complete(runner.cleanup())
        finally:
            loop.close()
