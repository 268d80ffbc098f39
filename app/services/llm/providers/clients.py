"""One pooled `openai` SDK client per (event loop, base URL, key, timeout, transport)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai
from openai import AsyncOpenAI

from app.core.config import get_settings
from app.core.loop_shutdown import close_at_loop_shutdown
from app.services.llm.per_loop import PerLoop

HttpTransport = Literal["aiohttp", "httpx"]
# Seconds to open a connection: a machine that is off or firewalled should fail fast and be
# retried, not hold a call for the whole (generation-sized) timeout.
CONNECT_TIMEOUT = 10.0


def connect_timeout(timeout: float) -> float:
    """The connect part of a client's `timeout`."""
    return min(timeout, CONNECT_TIMEOUT)


_clients: PerLoop[dict[tuple[str, ...], AsyncOpenAI]] = PerLoop(dict)


def pooled_client(
    base_url: str, api_key: str, timeout: float, transport: HttpTransport = "aiohttp"
) -> AsyncOpenAI:
    """The shared SDK client for this upstream; connections are reused across calls.

    Clients are kept per event loop because their connections belong to the loop that
    opened them, and are closed when that loop shuts down (see app.core.loop_shutdown).
    """
    # LLM_MAX_CONCURRENCY is the admission cap per upstream; the pool must not queue behind
    # it (the SDK's default keeps only 100 idle connections: more concurrent calls than that
    # would open a fresh connection for every request). The margin covers model discovery.
    connections = get_settings().llm_max_concurrency + 8
    per_loop = _clients.get()
    key_hash = hashlib.sha256(api_key.encode()).hexdigest()
    key = (base_url, key_hash, str(timeout), transport, str(connections))
    client = per_loop.get(key)
    if client is None:
        limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
        client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=httpx2.Timeout(timeout, connect=connect_timeout(timeout)),
            max_retries=0,  # we retry ourselves: only where it is safe, and logged
            http_client=(
                openai.DefaultAioHttpClient(limits=limits)
                if transport == "aiohttp"
                else openai.DefaultAsyncHttpxClient(limits=limits)
            ),
        )
        per_loop[key] = client
        close_at_loop_shutdown(_CLOSE_KEY, close_clients)
    return client


Closer = Callable[[], Awaitable[None]]
_CLOSE_KEY = "llm-clients"
_closers: PerLoop[dict[tuple[str, ...], Closer]] = PerLoop(dict)


def close_with_loop(key: tuple[str, ...], close: Closer) -> None:
    """Have `close_clients` call `close` (a pooled session or client of a provider that is
    not on the SDK: aiohttp for Ollama, aiobotocore for Bedrock); one closer per `key`.

    `close_clients` runs by itself when the loop shuts down, if nobody called it before."""
    _closers.get()[key] = close
    close_at_loop_shutdown(_CLOSE_KEY, close_clients)


async def close_clients() -> None:
    """Close every pooled client of the running loop now.

    Not needed at the end of `asyncio.run()`: the loop's shutdown closes them. The app's
    lifespan and the CLI call it to close them at a moment of their choosing.
    """
    for client in (_clients.pop() or {}).values():
        await client.close()
    for close in (_closers.pop() or {}).values():
        await close()


def redact_url(url: str) -> str:
    """`url` without any user:password part, fit for logs and messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))
