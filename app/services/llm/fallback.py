"""The fallback chain: the active provider, then each fallback in the admin's order.

One rule decides both retries (`calls.py`) and fallback, so that they never disagree: a
failure before the upstream generated anything (connection refused, 429, 5xx, our own
queue timeout, a timeout before the upstream accepted the request, a stream broken before
its first text) moves to the next provider once the current one's retries are spent.
Configuration errors, the caller's own mistakes (4xx) and a read timeout while the
upstream was generating never move; neither does anything after text reached the caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from prometheus_client import Counter

from app.services.llm.calls import PromptCalls, ProviderService
from app.services.llm.errors import LLMError, LLMNoModelsError, LLMOverloadedError
from app.services.llm.ledger import CallRecord, current_caller, recording
from app.services.llm.policy import check_model, may_call
from app.services.llm.protocol import (
    Capabilities,
    Completion,
    Embeddings,
    LLMService,
    Message,
    ModelInfo,
    ModelT,
    StreamChunk,
)
from app.services.llm.tools import ToolChoice

logger = logging.getLogger("app.services.llm")
T = TypeVar("T")

FALLBACKS = Counter(
    "llm_fallbacks_total",
    "Calls moved to the next provider of the fallback chain, by why the previous one failed",
    ["from", "to", "reason"],
)


def moves_on(error: LLMError) -> bool:
    """Whether a call that failed with `error` (its retries spent) may go to the next
    provider: only when the upstream generated nothing and another one could answer."""
    return error.retryable or isinstance(error, LLMOverloadedError | LLMNoModelsError)


class FallbackService(PromptCalls):
    """An LLM service over a chain of providers, each with its own model.

    It looks like its first provider (`provider`, `model`, …); every answer says which one
    actually served it (`Completion.provider` / `.model`, a stream's last chunk).
    """

    def __init__(self, chain: Sequence[ProviderService]) -> None:
        if len(chain) < 2:
            raise ValueError("a fallback chain needs at least two providers")
        self.chain = tuple(chain)
        self.primary = chain[0]

    @property
    def provider(self) -> Any:
        """The first provider of the chain."""
        return self.primary.provider

    @property
    def model(self) -> str:
        """The first provider's model."""
        return self.primary.model

    @property
    def display_name(self) -> str:
        """The first provider's name."""
        return self.primary.display_name

    @property
    def capabilities(self) -> Capabilities:
        """The first provider's capabilities."""
        return self.primary.capabilities

    @property
    def max_retries(self) -> int:
        """The first provider's retries."""
        return self.primary.max_retries

    @property
    def upstream(self) -> str:
        """The first provider's address."""
        return self.primary.upstream

    def __repr__(self) -> str:
        return f"FallbackService({', '.join(repr(s) for s in self.chain)})"

    async def run(self, call: Callable[[ProviderService], Awaitable[T]]) -> T:
        """`call` on each provider in turn until one answers or fails for good."""
        with recording(None):  # one usage record for the whole chain
            chain = self.allowed_chain()
            for index, service in enumerate(chain):
                try:
                    return await call(service)
                except LLMError as error:
                    if index + 1 == len(chain) or not moves_on(error):
                        raise
                    self._moving_on(service, chain[index + 1], error)
        raise AssertionError("unreachable: the last provider's error is raised")

    def allowed_chain(self) -> tuple[ProviderService, ...]:
        """The chain's entries the caller's policies allow (skipped ones are logged, never
        reached); `LLMPolicyError` (403) when none is."""
        caller = current_caller()
        if caller is None or not caller.scopes:
            return self.chain
        chain = tuple(s for s in self.chain if may_call(caller, s.provider.value, s.model))
        if not chain:
            check_model(caller, self.primary.provider.value, self.primary.model)
        if len(chain) < len(self.chain):
            logger.info(
                "llm fallback chain: %d of %d providers skipped by the caller's policy",
                len(self.chain) - len(chain),
                len(self.chain),
            )
        return chain

    async def get_structured_response(
        self,
        prompt: str,
        response_model: type[ModelT],
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelT:
        """The reply validated as `response_model`, from the first provider that can answer
        (each provider climbs its own structured-output ladder)."""
        return await self.run(
            lambda service: service.get_structured_response(
                prompt,
                response_model,
                system=system,
                temperature=temperature,
                max_tokens=max_tokens,
            )
        )

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
        """One completion from the first provider that can answer."""
        return await self.run(
            lambda service: service.complete(
                messages,
                temperature=temperature,
                max_tokens=max_tokens,
                response_format=response_format,
                seed=seed,
                stop=stop,
                tools=tools,
                tool_choice=tool_choice,
            )
        )

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
    ) -> AsyncGenerator[StreamChunk, None]:
        """A stream from the first provider that can answer. It moves on only before the
        first text: once text reached the caller, a failure ends the stream with an error,
        never a switch to another provider mid-answer."""
        record = CallRecord("tools_stream" if tools else "stream")  # one for the whole chain
        failure: BaseException | None = None
        try:
            chain = self.allowed_chain()
            for index, service in enumerate(chain):
                chunks = service.stream_chunks(
                    messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    response_format=response_format,
                    seed=seed,
                    stop=stop,
                    tools=tools,
                    tool_choice=tool_choice,
                    usage_record=record,
                )
                sent = False
                try:
                    async for chunk in chunks:
                        sent = sent or chunk.has_content
                        yield chunk
                    return
                except LLMError as error:
                    if sent or index + 1 == len(chain) or not moves_on(error):
                        raise
                    self._moving_on(service, chain[index + 1], error)
                finally:
                    await chunks.aclose()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            record.finish(failure)

    async def list_models(self) -> list[ModelInfo]:
        """The first provider's models."""
        return await self.primary.list_models()

    async def context_length(self) -> int | None:
        """The first provider's model's context window."""
        return await self.primary.context_length()

    async def embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        """The first provider's embeddings, never another's: vectors of different models
        are not comparable, so a chain that moved on would mix them in one index."""
        return await self.primary.embed(texts, model=model, dimensions=dimensions)

    def _moving_on(self, failed: ProviderService, to: ProviderService, error: LLMError) -> None:
        FALLBACKS.labels(failed.provider.value, to.provider.value, error.kind).inc()
        logger.warning(
            "llm fallback from %s (model %r) to %s (model %r): %s %r",
            failed.provider,
            failed.model,
            to.provider,
            to.model,
            error.kind,
            error.message,
        )


async def with_fallback(service: LLMService, call: Callable[[LLMService], Awaitable[T]]) -> T:
    """`call(service)`, or along the chain when `service` is a fallback chain."""
    if isinstance(service, FallbackService):
        return await service.run(call)
    return await call(service)
