"""The provider-neutral service: what every provider needs, around a wire that needs none of it.

`ProviderService` drives one provider's wire (`ProviderWire`) and owns retries with backoff,
the per-upstream concurrency slot, deadlines, metrics, timing and debug logging. The one
rule of retries (and of fallback, `fallback.py`) lives here: a failure the wire marks
`retryable` (nothing was generated: connection refused, 429, 5xx, a connect timeout, a
stream broken before its first text) is sent again after a backoff; nothing else is, and
nothing is once text has reached the caller.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from pydantic import BaseModel

from app.core.config import LLMProvider, get_settings
from app.services.llm.config import ProviderConfig
from app.services.llm.embeddings import (
    EMBEDDING_CONCURRENCY,
    batches,
    check_dimensions,
    embedding_texts,
    in_order,
    no_embedding_model,
)
from app.services.llm.errors import (
    LLMConfigurationError,
    LLMError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUpstreamError,
)
from app.services.llm.ledger import CallRecord, recording
from app.services.llm.limits import upstream_slot
from app.services.llm.metrics import (
    STREAMS_IN_FLIGHT,
    TIME_TO_FIRST_TOKEN,
    allow_model_labels,
    model_label,
    record_call,
    record_tool_calls,
)
from app.services.llm.policy import admit
from app.services.llm.protocol import (
    Capabilities,
    ChatRequest,
    Completion,
    EmbeddingRequest,
    Embeddings,
    Message,
    ModelInfo,
    ModelT,
    ProviderWire,
    StreamChunk,
    Usage,
)
from app.services.llm.providers.base import ProviderSpec
from app.services.llm.providers.clients import connect_timeout, redact_url
from app.services.llm.tools import (
    ToolChoice,
    ToolUse,
    check_tools_supported,
    check_trained_for_tools,
    get_tool_calls,
)

logger = logging.getLogger("app.services.llm")
T = TypeVar("T")


class PromptCalls:
    """The seed's prompt-level calls, built on `complete` and `stream_chunks` (shared by a
    single provider's service and the fallback chain)."""

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> Completion:
        """One chat completion (implemented by the service)."""
        raise NotImplementedError

    def stream_chunks(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> AsyncGenerator[StreamChunk, None]:
        """A completion as it arrives (implemented by the service)."""
        raise NotImplementedError

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

    async def get_tool_calls(
        self,
        prompt: str,
        tools: Sequence[type[BaseModel]],
        *,
        system: str | None = None,
        tool_choice: str = "auto",
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> list[ToolUse]:
        """The tools the model asks to call for `prompt`, each tool a Pydantic model (its
        class name is the function's name, its docstring the description, its fields the
        parameters), each call's arguments validated as that model; empty when the model
        answered with text. `tool_choice`: "auto", "required", "none" or a tool's name."""
        return await get_tool_calls(
            self,
            prompt,
            tools,
            system=system,
            tool_choice=tool_choice,
            temperature=temperature,
            max_tokens=max_tokens,
        )

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


class ProviderService(PromptCalls):
    """An LLM service: one provider and model, ready to answer (see `LLMService`)."""

    def __init__(
        self,
        spec: ProviderSpec,
        config: ProviderConfig,
        *,
        retry_backoff: float = 0.5,
        wire: ProviderWire | None = None,
        embedding_model: str | None = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.wire = wire if wire is not None else spec.make_wire(spec, config)
        self.provider: LLMProvider = spec.provider
        self.model = config.default_model
        self.base_url = config.base_url
        self.retry_backoff = retry_backoff
        self.embedding_model = embedding_model
        """The model `embed()` uses unless told otherwise (the provider's embedding model)."""

    @property
    def display_name(self) -> str:
        """The provider's name for people ("LM Studio")."""
        return self.spec.display_name

    @property
    def capabilities(self) -> Capabilities:
        """What the provider's wire can do."""
        return self.wire.capabilities

    @property
    def max_retries(self) -> int:
        """How many times a failed call may be sent again."""
        return self.config.max_retries

    @property
    def upstream(self) -> str:
        """The upstream's address without credentials: for messages, logs and cache keys."""
        return redact_url(self.base_url)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider.value!r}, model={self.model!r}, "
            f"base_url={self.upstream!r})"
        )

    # ── the public interface ────────────────────────────────────────────────

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

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> Completion:
        """One chat completion, retried where safe, with usage, finish reason and who answered."""
        request = self._request(
            messages, temperature, max_tokens, response_format, seed, stop, tools, tool_choice
        )
        if tools and self.capabilities.tool_use_listed:
            await check_trained_for_tools(self)
        started = time.perf_counter()
        outcome, usage = "cancelled", None
        with recording("tools" if tools else "text") as record:
            record.trying(self.provider.value, self.model)
            await admit(record, self.provider.value, self.model)  # the caller's policies
            try:
                async with self._slot():
                    started = time.perf_counter()  # latency is the upstream's, not our queue's
                    completion = await self._retrying(
                        "chat completion",
                        lambda attempt: self._within_deadline(
                            self.wire.complete(dataclasses.replace(request, attempt=attempt))
                        ),
                    )
                completion = dataclasses.replace(
                    completion, provider=self.provider.value, model=completion.model or self.model
                )
                usage, outcome = completion.usage, "ok"
                record.served(completion.provider, completion.model, usage)
                record_tool_calls(self.provider, self.model, len(completion.tool_calls))
            except LLMError as exc:
                outcome = exc.kind
                self._log_failure("complete", exc)
                raise
            finally:
                record_call(
                    self.provider,
                    self.model,
                    "complete",
                    outcome,
                    time.perf_counter() - started,
                    usage,
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
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        usage_record: CallRecord | None = None,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream a completion; the last chunk carries finish reason, usage and who answered.

        Retries only until the first text has been yielded. Closing the iterator early
        (a client that went away) closes the upstream connection at once. When the wire
        says that the upstream accepted the request (an empty chunk before any text, see
        `ProviderWire.stream`), one empty chunk is passed on, so that a caller can start
        its response while the model thinks. `usage_record` is the usage record of the
        caller's call this stream is part of (a fallback chain's); by default its own.
        """
        request = self._request(
            messages, temperature, max_tokens, response_format, seed, stop, tools, tool_choice
        )
        if tools and self.capabilities.tool_use_listed:
            await check_trained_for_tools(self)
        started = time.perf_counter()
        outcome, usage = "cancelled", None
        record = usage_record or CallRecord("tools_stream" if tools else "stream")
        record.trying(self.provider.value, self.model)
        failure: BaseException | None = None
        in_flight = STREAMS_IN_FLIGHT.labels(self.provider)
        try:
            await admit(record, self.provider.value, self.model)  # the caller's policies
            async with self._slot():
                started = time.perf_counter()  # time to first token excludes our queue
                in_flight.inc()
                try:
                    async for chunk in self._stream_with_retries(request, started):
                        record_tool_calls(
                            self.provider,
                            self.model,
                            sum(1 for call in chunk.tool_calls if call.name),
                        )
                        if chunk.usage is not None:
                            usage = chunk.usage
                            outcome = "ok"
                            record.served(chunk.provider, chunk.model, usage)
                        yield chunk
                finally:
                    in_flight.dec()
        except LLMError as exc:
            outcome = exc.kind
            failure = exc
            self._log_failure("stream", exc)
            raise
        except BaseException as exc:  # cancelled, closed early, or a bug
            failure = exc
            raise
        finally:
            record_call(
                self.provider, self.model, "stream", outcome, time.perf_counter() - started, usage
            )
            if usage_record is None:  # ended without its last chunk: the caller left
                ended = None if outcome == "ok" else asyncio.CancelledError()
                record.finish(failure or ended)

    async def _stream_with_retries(
        self, request: ChatRequest, started: float
    ) -> AsyncIterator[StreamChunk]:
        attempt = 0
        accepted = False
        while True:
            stream = self.wire.stream(dataclasses.replace(request, attempt=attempt))
            yielded = 0
            finish_reason: str | None = None
            usage: Usage | None = None
            answered_by = ""
            try:
                async for chunk in self._without_stalls(stream):
                    usage = chunk.usage or usage
                    finish_reason = chunk.finish_reason or finish_reason
                    answered_by = chunk.model or answered_by
                    if chunk.has_content:
                        if not yielded:
                            TIME_TO_FIRST_TOKEN.labels(
                                self.provider, model_label(self.model)
                            ).observe(time.perf_counter() - started)
                        yielded += 1
                        yield StreamChunk(
                            text=chunk.text, reasoning=chunk.reasoning, tool_calls=chunk.tool_calls
                        )
                    elif not accepted and chunk.finish_reason is None:
                        yield StreamChunk()  # the upstream accepted: nothing to show yet
                    accepted = True
                if finish_reason is None:
                    raise LLMUpstreamError(
                        f"The stream from {self.display_name} at {self.upstream} ended before "
                        f"the reply was complete (after {yielded} chunks)",
                        provider=self.provider,
                        upstream=self.upstream,
                    )
                usage = usage or Usage()
                self._log_call("stream", request.messages, started, usage, finish_reason)
                yield StreamChunk(
                    finish_reason=finish_reason,
                    usage=usage,
                    provider=self.provider.value,
                    model=answered_by or self.model,
                )
                return
            except LLMError as error:
                if yielded or not error.retryable or attempt >= self.max_retries:
                    raise
                attempt += 1
                await self._sleep_before_retry("stream", attempt, error)
            finally:
                await stream.aclose()

    def _request(
        self,
        messages: Sequence[Message],
        temperature: float | None,
        max_tokens: int | None,
        response_format: dict[str, Any] | None,
        seed: int | None,
        stop: str | list[str] | None,
        tools: Sequence[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
    ) -> ChatRequest:
        """The wire's request; a 400 naming the model when it cannot take the tools."""
        if tools:
            check_tools_supported(
                self.capabilities, self.display_name, self.provider, self.model, tool_choice
            )
        return ChatRequest(
            self.model,
            messages,
            temperature,
            max_tokens,
            response_format,
            seed,
            stop,
            tools=tools or None,
            tool_choice=tool_choice if tools else None,
        )

    async def list_models(self) -> list[ModelInfo]:
        """The models the upstream offers (no retries: discovery should fail fast)."""
        return await self.wire.list_models()

    async def context_length(self) -> int | None:
        """The model's context window, when the provider's discovery reports it."""
        for info in await discover_models(self):
            if info.id == self.model:
                return info.max_context_length
        return None

    # ── embeddings ──────────────────────────────────────────────────────────

    async def embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        """Vectors for `texts` (in their order) from `model`, by default the provider's
        embedding model; batched to the provider's limits, each batch retried where safe.
        Never falls back to another provider: vectors of different models do not compare."""
        items = embedding_texts(texts)
        check_dimensions(dimensions)
        chosen = (model or "").strip() or self.embedding_model
        if not chosen:
            raise no_embedding_model(self.spec)
        if not self.capabilities.embeddings:
            raise LLMConfigurationError(
                f"{self.display_name} does not serve embeddings", provider=self.provider
            )
        embedder = self
        if chosen != self.model:  # errors and metrics name the embedding model
            embedder = ProviderService(
                self.spec,
                self.config.model_copy(update={"default_model": chosen}),
                retry_backoff=self.retry_backoff,
                embedding_model=chosen,
            )
        return await embedder._embed(items, dimensions)

    async def _embed(self, texts: list[str], dimensions: int | None) -> Embeddings:
        size = self.wire.embedding_batch(self.model)
        started = time.perf_counter()
        outcome, usage = "cancelled", None
        with recording("embedding") as record:
            record.trying(self.provider.value, self.model)
            await admit(record, self.provider.value, self.model)  # the caller's policies
            try:
                parts = await in_order(
                    [
                        functools.partial(self._embed_batch, batch, dimensions)
                        for batch in batches(texts, size)
                    ],
                    EMBEDDING_CONCURRENCY,
                )
                costs = [p.usage.cost for p in parts if p.usage.cost is not None]
                usage = Usage(
                    prompt_tokens=sum(p.usage.prompt_tokens for p in parts),
                    cost=sum(costs) if costs else None,
                )
                result = Embeddings(
                    [vector for part in parts for vector in part.vectors],
                    usage,
                    self.provider.value,
                    parts[0].model or self.model,
                )
                outcome = "ok"
                record.served(result.provider, result.model, usage)
            except LLMError as exc:
                outcome = exc.kind
                self._log_failure("embed", exc)
                raise
            finally:
                record_call(
                    self.provider,
                    self.model,
                    "embed",
                    outcome,
                    time.perf_counter() - started,
                    usage,
                )
        return result

    async def _embed_batch(self, texts: list[str], dimensions: int | None) -> Embeddings:
        async with self._slot():
            part = await self._retrying(
                "embeddings",
                lambda attempt: self._within_deadline(
                    self.wire.embed(EmbeddingRequest(self.model, texts, dimensions, attempt))
                ),
            )
        if len(part.vectors) != len(texts):
            raise LLMUpstreamError(
                f"{self.display_name} at {self.upstream} returned {len(part.vectors)} "
                f"embeddings for {len(texts)} texts (model {self.model})",
                provider=self.provider,
                upstream=self.upstream,
            )
        return part

    # ── deadlines ───────────────────────────────────────────────────────────

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

    async def _without_stalls(
        self, stream: AsyncIterator[StreamChunk]
    ) -> AsyncIterator[StreamChunk]:
        """The stream's chunks, given up when one takes longer than `_patience()` to arrive
        (bytes trickling in without completing an event are no progress)."""
        loop = asyncio.get_running_loop()
        gap = self._patience()
        stall = asyncio.timeout_at(loop.time() + gap)
        try:
            async with stall:
                while True:
                    try:
                        chunk = await anext(stream)
                    except StopAsyncIteration:
                        return
                    stall.reschedule(None)
                    yield chunk
                    stall.reschedule(loop.time() + gap)
        except TimeoutError as exc:
            if stall.expired():
                raise self._reply_too_slow() from exc
            raise

    def _reply_too_slow(self) -> LLMTimeoutError:
        return LLMTimeoutError(
            f"{self.display_name} at {self.upstream} accepted the request but its reply did "
            f"not come within {self._patience():g} s (model {self.model}); it was not sent "
            f"again. Raise {self.spec.env_prefix}_TIMEOUT, ask for fewer tokens (max_tokens), "
            "or use a smaller or faster model.",
            provider=self.provider,
            upstream=self.upstream,
        )

    # ── slot, retries, logs ─────────────────────────────────────────────────

    def _slot(self) -> AbstractAsyncContextManager[None]:
        settings = get_settings()
        return upstream_slot(
            self.upstream,
            limit=settings.llm_max_concurrency,
            wait=settings.llm_queue_timeout,
            name=self.display_name,
            provider=self.provider,
        )

    async def _retrying(self, what: str, call: Callable[[int], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call(attempt)
            except LLMError as error:
                if not error.retryable or attempt >= self.max_retries:
                    raise
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
            self.max_retries,
            what,
            delay,
            error.kind,
            f" HTTP {status}" if status else "",
            self.provider,
            self.model,
            self.upstream,
        )
        await asyncio.sleep(delay)

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
            self.upstream,
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
_discovery_cache: dict[tuple[str, str], tuple[float, list[ModelInfo]]] = {}


async def discover_models(service: ProviderService) -> list[ModelInfo]:
    """`service.list_models()`, cached for a few seconds per provider and address.

    A settings page that polls should not hammer LM Studio; failures are never cached.
    """
    key = (service.provider.value, service.base_url)
    now = time.monotonic()
    cached = _discovery_cache.get(key)
    if cached is not None and now - cached[0] < DISCOVERY_TTL:
        return cached[1]
    models = await service.list_models()
    _discovery_cache[key] = (time.monotonic(), models)
    allow_model_labels(info.id for info in models)
    return models


def clear_discovery_cache() -> None:
    """Forget cached model lists (tests; after loading a model)."""
    _discovery_cache.clear()
