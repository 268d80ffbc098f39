"""The shared implementation for every upstream that speaks the OpenAI chat-completions wire
protocol (LM Studio, OpenAI, ...), on the official `openai` SDK with one pooled client per
base URL. Provider modules subclass it and add only what differs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, TypeVar

import openai
from openai import AsyncOpenAI, AsyncStream, RequestOptions

from app.core.config import LLMProvider, Settings, get_settings
from app.services.llm.config import LMStudioConfig, OpenAIConfig
from app.services.llm.errors import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMError,
    LLMInvalidRequestError,
    LLMModelNotFoundError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUpstreamError,
)
from app.services.llm.limits import upstream_slot
from app.services.llm.metrics import (
    STREAMS_IN_FLIGHT,
    TIME_TO_FIRST_TOKEN,
    allow_model_labels,
    model_label,
    record_call,
)
from app.services.llm.protocol import (
    Completion,
    Message,
    ModelInfo,
    ModelT,
    StreamChunk,
    Usage,
)
from app.services.llm.providers.clients import (
    HttpTransport,
    connect_timeout,
    pooled_client,
    redact_url,
)
from app.services.llm.providers.wire import (
    UPSTREAM_FAILURES,
    accepted_then_timed_out,
    context_from_meta,
    finish_reason_of,
    first_choice,
    part_of,
    reasoning_of,
    refused,
    retry_after_of,
    short_reason,
    stale_connection,
    text_of,
    timed_out,
    upstream_message,
    usage_of,
)

logger = logging.getLogger("app.services.llm")
# Upstream answers about the request itself (not auth, which is configuration): the
# caller's mistake, so 400 with the upstream's reason rather than 502.
BAD_REQUEST_STATUSES = frozenset({400, 404, 413, 422})
T = TypeVar("T")
_BEARER: RequestOptions = {"security": {"bearer_auth": True}}  # what `create` asks for


class OpenAICompatibleService:
    """An LLM service on an OpenAI-compatible upstream. Subclasses set the class attributes."""

    provider: ClassVar[LLMProvider]
    display_name: ClassVar[str] = "the upstream"
    env_prefix: ClassVar[str] = "LLM"
    connection_hint: ClassVar[str] = "check the base URL and the network"

    def __init__(
        self,
        config: LMStudioConfig | OpenAIConfig,
        *,
        retry_backoff: float = 0.5,
        transport: HttpTransport = "aiohttp",
    ) -> None:
        self.config = config
        self.model = config.default_model
        self.base_url = config.base_url
        self.retry_backoff = retry_backoff
        self.transport: HttpTransport = transport

    @classmethod
    def config_from(cls, settings: Settings, model: str) -> LMStudioConfig | OpenAIConfig:
        """This provider's config from the env settings and the chosen model."""
        raise NotImplementedError

    @classmethod
    def check_settings(cls, settings: Settings) -> None:
        """Raise LLMConfigurationError if the env settings cannot work for this provider."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={redact_url(self.base_url)!r})"
        )

    # ── the public interface ────────────────────────────────────────────────

    async def get_response(
        self,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The model's reply to `prompt`, as text."""
        completion = await self.complete(
            build_messages(prompt, system), temperature=temperature, max_tokens=max_tokens
        )
        return completion.text

    async def get_structured_response(
        self,
        prompt: str,
        response_model: type[ModelT],
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelT:
        """The reply validated as `response_model` (json_schema, then fallbacks, then repair)."""
        from app.services.llm.structured import generate_structured

        result = await generate_structured(
            self,
            prompt,
            response_model,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        return result.value

    async def stream_response(
        self,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str]:
        """The reply to `prompt` as text chunks, yielded as they arrive."""
        async for chunk in self.stream_chunks(
            build_messages(prompt, system), temperature=temperature, max_tokens=max_tokens
        ):
            if chunk.text:
                yield chunk.text

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
    ) -> Completion:
        """One chat completion, retried where safe, with usage and finish reason."""
        params = self._params(messages, temperature, max_tokens, response_format, seed, stop)
        started = time.perf_counter()
        outcome, usage = "cancelled", None
        try:
            async with self._slot():
                started = time.perf_counter()  # latency is the upstream's, not our queue's
                response = await self._retrying(
                    "chat completion", lambda: self._within_deadline(self._create(params))
                )
            choice = first_choice(response)
            if choice is None:
                raise self._not_a_completion(response)
            message = part_of(choice, "message")
            completion = Completion(
                text=text_of(message),
                finish_reason=finish_reason_of(choice),
                reasoning=reasoning_of(message),
                usage=usage_of(response) or Usage(),
            )
            usage, outcome = completion.usage, "ok"
        except LLMError as exc:
            outcome = exc.kind
            self._log_failure("complete", exc)
            raise
        finally:
            record_call(
                self.provider, self.model, "complete", outcome, time.perf_counter() - started, usage
            )
        self._log_call("complete", messages, started, completion.usage, completion.finish_reason)
        return completion

    async def stream_chunks(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream a completion; the last chunk carries finish reason and usage.

        Retries only until the first text has been yielded. Closing the iterator early
        (a client that went away) closes the upstream connection at once.
        """
        params = self._params(messages, temperature, max_tokens, response_format, seed, stop)
        params.update(stream=True, stream_options={"include_usage": True})
        started = time.perf_counter()
        outcome, usage = "cancelled", None
        in_flight = STREAMS_IN_FLIGHT.labels(self.provider)
        try:
            async with self._slot():
                started = time.perf_counter()  # time to first token excludes our queue
                in_flight.inc()
                try:
                    async for chunk in self._stream_with_retries(messages, params, started):
                        if chunk.usage is not None:
                            usage = chunk.usage
                            outcome = "ok"
                        yield chunk
                finally:
                    in_flight.dec()
        except LLMError as exc:
            outcome = exc.kind
            self._log_failure("stream", exc)
            raise
        finally:
            record_call(
                self.provider, self.model, "stream", outcome, time.perf_counter() - started, usage
            )

    async def _stream_with_retries(
        self, messages: Sequence[Message], params: dict[str, Any], started: float
    ) -> AsyncIterator[StreamChunk]:
        attempt = 0
        while True:
            stream = await self._retrying("stream", lambda: self._create_stream(params))
            yielded = 0
            finish_reason: str | None = None
            usage = Usage()
            try:
                async for raw in self._without_stalls(stream):
                    usage = usage_of(raw) or usage
                    choice = first_choice(raw)
                    if choice is None:
                        continue
                    finish_reason = finish_reason_of(choice) or finish_reason
                    delta = part_of(choice, "delta")
                    chunk = StreamChunk(text=text_of(delta), reasoning=reasoning_of(delta) or "")
                    if chunk.text or chunk.reasoning:
                        if not yielded:
                            TIME_TO_FIRST_TOKEN.labels(
                                self.provider, model_label(self.model)
                            ).observe(time.perf_counter() - started)
                        yielded += 1
                        yield chunk
                if finish_reason is None:
                    raise LLMUpstreamError(
                        f"The stream from {self.display_name} at {self._url()} ended before the "
                        f"reply was complete (after {yielded} chunks)",
                        provider=self.provider,
                        upstream=self._url(),
                    )
                self._log_call("stream", messages, started, usage, finish_reason)
                yield StreamChunk(finish_reason=finish_reason, usage=usage)
                return
            except LLMError:
                raise
            except Exception as exc:
                error = self._translate(exc)
                if not isinstance(error, LLMTimeoutError):
                    error = LLMUpstreamError(
                        f"The stream from {self.display_name} at {self._url()} broke off after "
                        f"{yielded} chunks ({type(exc).__name__})",
                        provider=self.provider,
                        upstream=self._url(),
                    )
                    error.retryable = True  # safe while nothing has reached the caller
                if yielded or not error.retryable or attempt >= self.config.max_retries:
                    raise error from exc
                attempt += 1
                await self._sleep_before_retry("stream", attempt, error)
            finally:
                await stream.close()

    async def list_models(self) -> list[ModelInfo]:
        """The models `GET /models` lists (no retries: discovery should fail fast)."""
        try:
            page = await self._client().models.list()
        except UPSTREAM_FAILURES as exc:
            raise self._translate(exc) from exc
        return [
            ModelInfo(id=model.id, max_context_length=context_from_meta(model))
            for model in page.data
        ]

    async def context_length(self) -> int | None:
        """The model's context window, when the upstream's model list reports it."""
        for info in await discover_models(self):
            if info.id == self.model:
                return info.max_context_length
        return None

    # ── plumbing shared by providers ────────────────────────────────────────

    def api_key(self) -> str:
        """The key sent as Bearer; upstreams without auth get a placeholder."""
        return "not-needed"

    def _patience(self) -> float:
        """How long a whole reply, or a stream's wait for its next event, may take.

        The client's own timeout bounds each wait for bytes, so an upstream that trickles a
        byte now and then would otherwise hold a request for as long as it trickles. This
        bound is the connect part plus `timeout`: later than the client's own read timeout,
        which keeps its clearer error for an upstream that sends nothing at all (and keeps
        the two from firing together: Python 3.11 then leaks a cancellation).
        """
        return connect_timeout(self.config.timeout) + self.config.timeout

    async def _within_deadline(self, reply: Awaitable[T]) -> T:
        """`reply`, given up after `_patience()` seconds."""
        deadline = asyncio.timeout(self._patience())
        try:
            async with deadline:
                return await reply
        except TimeoutError as exc:
            if deadline.expired():
                raise self._reply_too_slow() from exc
            raise

    async def _without_stalls(self, stream: AsyncStream[object]) -> AsyncIterator[object]:
        """The stream's events, given up when one takes longer than `_patience()` to arrive
        (bytes trickling in without completing an event are no progress)."""
        loop = asyncio.get_running_loop()
        gap = self._patience()
        events = aiter(stream)
        stall = asyncio.timeout_at(loop.time() + gap)
        try:
            async with stall:
                while True:
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        return
                    stall.reschedule(None)
                    yield event
                    stall.reschedule(loop.time() + gap)
        except TimeoutError as exc:
            if stall.expired():
                raise self._reply_too_slow() from exc
            raise

    def _reply_too_slow(self) -> LLMTimeoutError:
        return LLMTimeoutError(
            f"{self.display_name} at {self._url()} accepted the request but its reply did not "
            f"come within {self._patience():g} s (model {self.model}); it was not sent again. "
            f"Raise {self.env_prefix}_TIMEOUT, ask for fewer tokens (max_tokens), or use a "
            "smaller or faster model.",
            provider=self.provider,
            upstream=self._url(),
        )

    def _create(self, params: dict[str, Any]) -> Awaitable[object]:
        """`chat.completions.create(**params)`, as the parsed JSON body.

        Through `client.post`, the SDK's documented way to send a body as it is: `create`
        walks the whole body against its TypedDicts to rename aliased fields (ours has none;
        the walk was a fifth of a request's CPU), and building response models field by
        field cost more than reading the few fields we use (`wire.py`). The SDK still sends,
        authenticates, decodes and raises its errors for non-2xx answers as usual.
        """
        return self._client().post(
            "/chat/completions", body=params, cast_to=object, options=_BEARER
        )

    def _create_stream(self, params: dict[str, Any]) -> Awaitable[AsyncStream[object]]:
        """The streaming form of `_create` (params carry `stream: true`): parsed SSE events."""
        return self._client().post(
            "/chat/completions",
            body=params,
            cast_to=object,
            options=_BEARER,
            stream=True,
            stream_cls=AsyncStream[object],
        )

    def _client(self) -> AsyncOpenAI:
        return pooled_client(self.base_url, self.api_key(), self.config.timeout, self.transport)

    def _url(self) -> str:
        return redact_url(self.base_url)

    def _slot(self) -> AbstractAsyncContextManager[None]:
        settings = get_settings()
        return upstream_slot(
            self._url(),
            limit=settings.llm_max_concurrency,
            wait=settings.llm_queue_timeout,
            name=self.display_name,
            provider=self.provider,
        )

    def _params(
        self,
        messages: Sequence[Message],
        temperature: float | None,
        max_tokens: int | None,
        response_format: dict[str, Any] | None,
        seed: int | None,
        stop: str | list[str] | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if response_format is not None:
            params["response_format"] = response_format
        if seed is not None:
            params["seed"] = seed
        if stop is not None:
            params["stop"] = stop
        return params

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        stale_retried = False
        while True:
            try:
                return await call()
            except UPSTREAM_FAILURES as exc:
                if not stale_retried and stale_connection(exc):
                    # A pooled keep-alive connection the server had already closed (llama.cpp
                    # closes after a stream): the request never left, so resend it at once.
                    stale_retried = True
                    logger.debug("llm %s: pooled connection was closed; resending", what)
                    continue
                error = self._translate(exc)
                if not error.retryable or attempt >= self.config.max_retries:
                    raise error from exc
                attempt += 1
                await self._sleep_before_retry(what, attempt, error)

    async def _sleep_before_retry(self, what: str, attempt: int, error: LLMError) -> None:
        delay = min(self.retry_backoff * 2 ** (attempt - 1), 8.0) * (0.5 + random.random() / 2)  # noqa: S311
        if isinstance(error, LLMRateLimitError) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, 30.0))
        status = getattr(error, "upstream_status", None)
        logger.warning(
            "llm retry %d/%d of %s in %.2fs: %s%s (provider=%s model=%r base_url=%s)",
            attempt,
            self.config.max_retries,
            what,
            delay,
            error.kind,
            f" HTTP {status}" if status else "",
            self.provider,
            self.model,
            self._url(),
        )
        await asyncio.sleep(delay)

    def _not_a_completion(self, response: object) -> LLMError:
        said = response.get("error") if isinstance(response, dict) else None
        if isinstance(said, str):
            # LM Studio answers unknown paths with HTTP 200 and {"error": "Unexpected endpoint"}.
            return LLMUpstreamError(
                f"{self.display_name} at {self._url()} answered '{short_reason(said)}': check "
                f"that {self.env_prefix}_BASE_URL ends with /v1",
                provider=self.provider,
                upstream=self._url(),
            )
        return LLMUpstreamError(
            f"{self.display_name} at {self._url()} returned a reply that is not a chat "
            f"completion (model {self.model})",
            provider=self.provider,
            upstream=self._url(),
        )

    def _translate(self, exc: Exception) -> LLMError:
        """Turn an SDK (or transport) exception into an LLMError with an actionable message."""
        name, url, provider = self.display_name, self._url(), self.provider
        if isinstance(exc, LLMError):
            return exc
        if timed_out(exc):
            if not accepted_then_timed_out(exc):  # nothing was sent: safe to retry
                return LLMTimeoutError(
                    f"{name} at {url} did not accept a connection within "
                    f"{connect_timeout(self.config.timeout):g} s: {self.connection_hint}.",
                    accepted=False,
                    provider=provider,
                    upstream=url,
                )
            return LLMTimeoutError(
                f"{name} at {url} did not answer within {self.config.timeout} s (model "
                f"{self.model}). It accepted the request, so the model is probably still "
                f"generating; it was not sent again. Raise {self.env_prefix}_TIMEOUT, ask for "
                "fewer tokens (max_tokens), or use a smaller or faster model.",
                provider=provider,
                upstream=url,
            )
        if isinstance(exc, openai.APIConnectionError) and not refused(exc):
            # Connected, but the reply broke off (aiohttp ClientPayloadError, httpx
            # RemoteProtocolError): the server is there, so "cannot connect" would mislead.
            error = LLMUpstreamError(
                f"{name} at {url} closed the connection before its reply was complete "
                f"(model {self.model})",
                provider=provider,
                upstream=url,
            )
            error.retryable = True  # nothing has reached the caller yet
            return error
        if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one too
            return LLMConnectionError(
                f"Cannot connect to {name} at {url}: {self.connection_hint}.",
                provider=provider,
                upstream=url,
            )
        if isinstance(exc, openai.APIStatusError):
            return self._translate_status(exc.status_code, upstream_message(exc), exc)
        if isinstance(exc, UnicodeEncodeError):  # raised building the request: nothing sent
            return LLMInvalidRequestError(
                "The request holds text that is not valid Unicode (a lone UTF-16 surrogate "
                "such as \\ud800): send well-formed text",
                provider=provider,
            )
        if isinstance(exc, ValueError):
            return LLMUpstreamError(
                f"{name} at {url} returned a reply that is not valid JSON (model {self.model})",
                provider=provider,
                upstream=url,
            )
        return LLMUpstreamError(
            f"{name} at {url} returned something unexpected ({type(exc).__name__})",
            provider=provider,
            upstream=url,
        )

    def _translate_status(self, status: int, message: str, exc: openai.APIStatusError) -> LLMError:
        name, url = self.display_name, self._url()
        reason = short_reason(message)
        if status in (401, 403):
            # The upstream's own text may quote part of the key we sent, so it is not repeated.
            return LLMAuthenticationError(
                f"{name} at {url} rejected the credentials (HTTP {status}): "
                f"set {self.env_prefix}_API_KEY to a valid key",
                provider=self.provider,
                upstream=url,
                upstream_status=status,
            )
        if status == 404 and "model" in message.lower():
            return LLMModelNotFoundError(
                f"Model '{self.model}' is not available on {name} at {url}: {reason}",
                provider=self.provider,
                upstream=url,
            )
        if status == 429:
            return LLMRateLimitError(
                f"{name} at {url} is rate limiting requests (HTTP 429: {reason})",
                provider=self.provider,
                upstream=url,
                retry_after=retry_after_of(exc),
            )
        if status in BAD_REQUEST_STATUSES:
            return LLMBadRequestError(
                f"{name} at {url} refused the request (HTTP {status}): {reason}",
                provider=self.provider,
                upstream=url,
                upstream_status=status,
            )
        return LLMUpstreamError(
            f"{name} at {url} answered HTTP {status}: {reason}",
            provider=self.provider,
            upstream=url,
            upstream_status=status,
        )

    def _log_failure(self, kind: str, error: LLMError) -> None:
        # The message names the upstream; never the prompt (no message holds it).
        level = logging.WARNING if error.status_code >= 500 else logging.INFO
        logger.log(
            level,
            "llm %s failed: %s %r (provider=%s model=%r)",
            kind,
            error.kind,
            error.message,
            self.provider,
            self.model,
        )

    def _log_call(
        self,
        kind: str,
        messages: Sequence[Message],
        started: float,
        usage: Usage,
        finish_reason: str | None,
    ) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            return
        logger.debug(
            "llm %s provider=%s model=%r base_url=%s prompt_chars=%d latency_ms=%.1f "
            "prompt_tokens=%d completion_tokens=%d finish_reason=%s",
            kind,
            self.provider,
            self.model,
            self._url(),
            sum(len(str(m.get("content", ""))) for m in messages),
            (time.perf_counter() - started) * 1000,
            usage.prompt_tokens,
            usage.completion_tokens,
            finish_reason,
        )


def build_messages(prompt: str, system: str | None = None) -> list[Message]:
    """Chat messages for a single prompt with an optional system message."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return messages


DISCOVERY_TTL = 3.0
_discovery_cache: dict[str, tuple[float, list[ModelInfo]]] = {}


async def discover_models(service: OpenAICompatibleService) -> list[ModelInfo]:
    """`service.list_models()`, cached for a few seconds per base URL.

    A settings page that polls should not hammer LM Studio; failures are never cached.
    """
    now = time.monotonic()
    cached = _discovery_cache.get(service.base_url)
    if cached is not None and now - cached[0] < DISCOVERY_TTL:
        return cached[1]
    models = await service.list_models()
    _discovery_cache[service.base_url] = (time.monotonic(), models)
    allow_model_labels(info.id for info in models)
    return models


def clear_discovery_cache() -> None:
    """Forget cached model lists (tests; after loading a model)."""
    _discovery_cache.clear()
