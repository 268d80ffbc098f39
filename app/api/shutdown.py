"""Graceful shutdown under `python -m app serve`: SIGTERM drains instead of cutting streams.

On SIGTERM the readiness probe turns 503 at once, while the server keeps accepting and
serving requests for `shutdown_drain_seconds` (a load balancer or Kubernetes keeps routing
until it has seen readiness fail). Only then is the server's own SIGTERM handler called:
it stops accepting, lets in-flight requests and streams finish within its graceful timeout
(`serve` sets it to what is left of `shutdown_grace_seconds`), and runs the lifespan
shutdown, which closes the upstream clients and the database pool.

Streams (`app.api.streaming`) end when their answer does, or when the grace runs out.
Nothing here runs per request: the readiness route reads one flag.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType

import uvicorn

logger = logging.getLogger("app.shutdown")

_draining = threading.Event()


def draining() -> bool:
    """True from the first SIGTERM on: readiness reports 503."""
    return _draining.is_set()


def reset() -> None:
    """Forget a drain (tests that reuse the process)."""
    _draining.clear()


def drain_on_sigterm(drain_seconds: int) -> bool:
    """Put the drain in front of the server's SIGTERM handler; False if there is none.

    Call from the lifespan startup, on the main thread, while uvicorn's handlers are
    installed (it restores its predecessors, and so drops this one, when it stops). An app
    served without them (tests, embedding, another server) is left alone. A second SIGTERM
    skips what is left of the drain.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if not isinstance(server, uvicorn.Server):
        return False  # not uvicorn's handler: another server (Granian) stops its own way
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if _draining.is_set():
            server.handle_exit(signum, frame)
            return
        _draining.set()
        logger.info("SIGTERM: not ready; serving for %d s more, then stopping", drain_seconds)
        loop.call_soon_threadsafe(loop.call_later, drain_seconds, server.handle_exit, signum, None)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True
