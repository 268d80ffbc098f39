"""One pooled aiohttp session per (event loop, upstream, credentials, timeout), and closing
them (and other providers' pooled clients) with their loop."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from app.core.config import get_settings
from app.core.loop_shutdown import close_at_loop_shutdown
from app.services.llm.per_loop import PerLoop

# Seconds to open a connection: a machine that is off or firewalled should fail fast and be
# retried, not hold a call for the whole (generation-sized) timeout.
CONNECT_TIMEOUT = 10.0


def connect_timeout(timeout: float) -> float:
    """The connect part of a client's `timeout`."""
    return min(timeout, CONNECT_TIMEOUT)


_sessions: PerLoop[dict[tuple[str, ...], aiohttp.ClientSession]] = PerLoop(dict)


def pooled_session(
    base_url: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    *,
    proxy_from_env: bool = False,
) -> aiohttp.ClientSession:
    """The shared session for this upstream and these default `headers` (credentials);
    connections are reused across calls. `proxy_from_env`: through the proxy the
    environment names for it (`env_proxy`).

    Sessions are kept per event loop because their connections belong to the loop that
    opened them, and are closed when that loop shuts down (see app.core.loop_shutdown).
    `timeout` bounds each read (a generation may be long, but never silent that long);
    connecting, including waiting for a free pooled connection, gets `connect_timeout`.
    """
    # LLM_MAX_CONCURRENCY is the admission cap per upstream; the pool must not queue behind
    # it. The margin covers model discovery.
    connections = get_settings().llm_max_concurrency + 8
    sent = sorted((headers or {}).items())
    credentials = hashlib.sha256(repr(sent).encode()).hexdigest()
    key = (base_url, credentials, str(timeout), str(connections), str(proxy_from_env))
    per_loop = _sessions.get()
    session = per_loop.get(key)
    if session is None or session.closed:
        proxy, proxy_auth = env_proxy(base_url) if proxy_from_env else (None, None)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=connect_timeout(timeout), sock_read=timeout
            ),
            headers=dict(sent) or None,
            proxy=proxy,
            proxy_auth=proxy_auth,
        )
        per_loop[key] = session
        close_at_loop_shutdown(_CLOSE_KEY, close_clients)
    return session


def env_proxy(base_url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy HTTP_PROXY / HTTPS_PROXY name for `base_url` unless NO_PROXY exempts it, as
    HTTP clients honour them (the `openai` SDK's did); read once per session, not per call."""
    try:
        return get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return None, None


Closer = Callable[[], Awaitable[None]]
_CLOSE_KEY = "llm-clients"
_closers: PerLoop[dict[tuple[str, ...], Closer]] = PerLoop(dict)


def close_with_loop(key: tuple[str, ...], close: Closer) -> None:
    """Have `close_clients` call `close` (a pooled client that is not an aiohttp session of
    `pooled_session`: aiobotocore's for Bedrock); one closer per `key`.

    `close_clients` runs by itself when the loop shuts down, if nobody called it before."""
    _closers.get()[key] = close
    close_at_loop_shutdown(_CLOSE_KEY, close_clients)


async def close_clients() -> None:
    """Close every pooled session and client of the running loop now.

    Not needed at the end of `asyncio.run()`: the loop's shutdown closes them. The app's
    lifespan and the CLI call it to close them at a moment of their choosing.
    """
    for session in (_sessions.pop() or {}).values():
        await session.close()
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
