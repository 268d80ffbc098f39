"""A wire on a pooled aiohttp session (OpenAI's chat-completions wire, Ollama's native API):
sending one request, once more at once when it went to a stale pooled connection, reading
bounded bodies, and transport failures as LLMErrors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import aiohttp

from app.services.llm.errors import LLMError
from app.services.llm.providers.base import Wire
from app.services.llm.providers.clients import pooled_session
from app.services.llm.providers.wire import stale_connection

logger = logging.getLogger("app.services.llm")
MAX_BODY = 64 * 1024 * 1024  # a whole non-streamed reply
MAX_ERROR_BODY = 64 * 1024
# What sending or reading may raise besides our own errors: aiohttp's errors, socket errors
# and timeouts (aiohttp's timeouts are TimeoutErrors).
TRANSPORT_FAILURES = (aiohttp.ClientError, OSError, TimeoutError)
_JSON = {"Content-Type": "application/json"}
DRAIN_TIMEOUT = 0.1  # seconds to wait for the end of a body whose last event has come


class HttpWire(Wire):
    """The transport half of a wire on aiohttp; subclasses speak the protocol."""

    proxy_from_env = False
    """Whether HTTP_PROXY / HTTPS_PROXY / NO_PROXY apply (`clients.env_proxy`)."""

    def default_headers(self) -> Mapping[str, str] | None:
        """Headers every request carries (credentials): the pooled session sets them."""
        return None

    def session(self, base_url: str) -> aiohttp.ClientSession:
        """The pooled session for `base_url` with this wire's default headers."""
        return pooled_session(
            base_url,
            self.config.timeout,
            self.default_headers(),
            proxy_from_env=self.proxy_from_env,
        )

    async def request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        payload: bytes | None,
        *,
        resend: bool,
        timeouts: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """The response to one request, status not checked; the caller releases it.

        `resend`: whether a request that went to a stale pooled connection is sent once more
        (a chat call's first attempt only: see `ChatRequest.attempt`); `timeouts` replace
        the session's for this request."""
        headers = _JSON if payload is not None else None
        timeouts = timeouts or session.timeout
        try:
            return await session.request(
                method, url, data=payload, headers=headers, timeout=timeouts
            )
        except TRANSPORT_FAILURES as exc:
            # A pooled keep-alive connection the server had closed: the request never
            # reached it, so it is sent once more at once, on a fresh connection.
            if not (resend and stale_connection(exc) and not connect_failure(exc)):
                raise self.failure(exc) from exc
            logger.debug("llm: pooled connection was closed; resending")
        try:
            return await session.request(
                method, url, data=payload, headers=headers, timeout=timeouts
            )
        except TRANSPORT_FAILURES as exc:
            raise self.failure(exc) from exc

    async def read(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body of a reply; the response is released (its connection closed when
        the body was not read to the end)."""
        try:
            raw = await read_bounded(response, MAX_BODY)
        except TRANSPORT_FAILURES as exc:
            raise self.failure(exc) from exc
        finally:
            response.release()
        if raw is None:
            raise self.invalid_reply_error(f"a reply over {MAX_BODY // 1024**2} MiB")
        return raw

    async def error_body(self, response: aiohttp.ClientResponse) -> bytes:
        """What came with an error status (at most MAX_ERROR_BODY bytes, or nothing when it
        could not be read); the response is released."""
        try:
            return await read_bounded(response, MAX_ERROR_BODY) or b""
        except TRANSPORT_FAILURES:
            return b""
        finally:
            response.release()

    def failure(self, exc: BaseException) -> LLMError:
        """The LLMError for a transport failure."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return self.timeout_error(accepted=False)  # includes waiting for a pooled connection
        if connect_failure(exc):
            return self.connection_error()
        if isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError: sock_read ran out
            return self.timeout_error(accepted=True)
        return self.broken_reply_error()


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than `limit` bytes."""
    declared = response.content_length
    if declared is not None and declared <= limit:
        return await response.read()  # one buffer, no join: the common case
    chunks: list[bytes] = []
    size = 0
    async for data in response.content.iter_any():
        size += len(data)
        if size > limit:
            response.close()
            return None
        chunks.append(data)
    return b"".join(chunks)


async def drain(response: aiohttp.ClientResponse) -> None:
    """Read what is left of a reply whose content has all come (a chunked body's closing
    bytes after `[DONE]`), for at most DRAIN_TIMEOUT, so that releasing it returns its
    connection to the pool; a server that keeps the body open loses the connection."""
    if response.content.at_eof():
        return
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            async for _ in response.content.iter_any():
                pass
    except (*TRANSPORT_FAILURES, TimeoutError):
        pass  # releasing will close it: the reply itself is complete


def connect_failure(exc: BaseException) -> bool:
    """True when no connection could be opened (refused, unreachable, unknown host)."""
    return isinstance(exc, aiohttp.ClientConnectorError)


def seconds(header: str | None) -> float | None:
    """A `Retry-After` header's seconds, or None when it is absent or not a number."""
    try:
        return float(header) if header else None
    except ValueError:
        return None
