"""One pooled `openai` SDK client per (event loop, base URL, key, timeout, transport)."""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import openai
from openai import AsyncOpenAI

HttpTransport = Literal["aiohttp", "httpx"]

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], AsyncOpenAI]]
_clients = weakref.WeakKeyDictionary()


def pooled_client(
    base_url: str, api_key: str, timeout: float, transport: HttpTransport = "aiohttp"
) -> AsyncOpenAI:
    """The shared SDK client for this upstream; connections are reused across calls.

    Clients are kept per event loop because their connections belong to the loop that
    opened them.
    """
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (base_url, hashlib.sha256(api_key.encode()).hexdigest(), str(timeout), transport)
    client = per_loop.get(key)
    if client is None:
        client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=0,  # we retry ourselves: only where it is safe, and logged
            http_client=openai.DefaultAioHttpClient() if transport == "aiohttp" else None,
        )
        per_loop[key] = client
    return client


async def close_clients() -> None:
    """Close every pooled client of the running loop (at application shutdown)."""
    per_loop = _clients.pop(asyncio.get_running_loop(), {})
    for client in per_loop.values():
        await client.close()


def redact_url(url: str) -> str:
    """`url` without any user:password part, fit for logs and messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))
