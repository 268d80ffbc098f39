"""The wire shared by every upstream that speaks OpenAI's chat-completions protocol (LM Studio,
OpenAI, OpenRouter), on the official `openai` SDK with one pooled client per base URL.
Provider modules subclass `OpenAIWire` and add only what differs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeGuard, TypeVar

import openai
from openai import AsyncOpenAI, AsyncStream, RequestOptions

from app.core.config import get_settings
from app.services.llm.errors import LLMError, LLMInvalidRequestError
from app.services.llm.protocol import ChatRequest, Completion, ModelInfo, StreamChunk, Usage
from app.services.llm.providers.base import Wire
from app.services.llm.providers.clients import pooled_client
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
T = TypeVar("T")
_BEARER: RequestOptions = {"security": {"bearer_auth": True}}  # what `create` asks for


class OpenAIWire(Wire):
    """OpenAI's chat-completions wire through the SDK's raw path."""

    def api_key(self) -> str:
        """The key sent as Bearer; upstreams without auth get a placeholder."""
        key = getattr(self.config, "api_key", None)
        return key.get_secret_value() if key is not None else "not-needed"

    def extra_headers(self) -> dict[str, str] | None:
        """Headers every request carries besides auth (OpenRouter's attribution)."""
        return None

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body of a chat-completions request."""
        body: dict[str, Any] = {"model": request.model, "messages": list(request.messages)}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.response_format is not None:
            body["response_format"] = request.response_format
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop is not None:
            body["stop"] = request.stop
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        """One chat completion, read from the parsed JSON body.

        Through `client.post`, the SDK's documented way to send a body as it is: `create`
        walks the whole body against its TypedDicts to rename aliased fields (ours has none;
        the walk was a fifth of a request's CPU), and building response models field by
        field cost more than reading the few fields we use (`wire.py`). The SDK still sends,
        authenticates, decodes and raises its errors for non-2xx answers as usual.
        """
        body = self.body(request)
        response = await self._sent(
            request,
            lambda: self._client().post(
                "/chat/completions", body=body, cast_to=object, options=self._options()
            ),
        )
        self.check_reply(response)
        choice = first_choice(response)
        if choice is None:
            raise self.not_a_completion(response)
        message = part_of(choice, "message")
        answered_by = response.get("model") if isinstance(response, dict) else None
        return Completion(
            text=text_of(message),
            finish_reason=finish_reason_of(choice),
            reasoning=reasoning_of(message),
            usage=self.usage_in(response) or Usage(),
            model=answered_by if isinstance(answered_by, str) else "",
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The completion's SSE events as chunks; the last carries finish reason and usage."""
        body = self.body(request)
        body.update(stream=True, stream_options={"include_usage": True})
        stream = await self._sent(
            request,
            lambda: self._client().post(
                "/chat/completions",
                body=body,
                cast_to=object,
                options=self._options(),
                stream=True,
                stream_cls=AsyncStream[object],
            ),
        )
        finish_reason: str | None = None
        usage: Usage | None = None
        answered_by = ""
        sent = 0
        try:
            async for event in stream:
                self.check_event(event)
                usage = self.usage_in(event) or usage
                if isinstance(event, dict) and isinstance(event.get("model"), str):
                    answered_by = event["model"]
                choice = first_choice(event)
                if choice is None:
                    continue
                finish_reason = finish_reason_of(choice) or finish_reason
                delta = part_of(choice, "delta")
                text, reasoning = text_of(delta), reasoning_of(delta) or ""
                if text or reasoning:
                    sent += 1
                    yield StreamChunk(text=text, reasoning=reasoning)
        except LLMError:
            raise
        except Exception as exc:
            raise self.stream_broke_off(self.translate(exc), exc, sent) from exc
        finally:
            await stream.close()
        if finish_reason is not None:
            yield StreamChunk(finish_reason=finish_reason, usage=usage, model=answered_by)

    def stream_broke_off(self, translated: LLMError, exc: Exception, sent: int) -> LLMError:
        """The SDK raises a bare `APIError` for an SSE event with a top-level `error` object
        (OpenAI, OpenRouter): the upstream reporting a failed generation, not a connection
        breaking off, so an error that is not retried."""
        if in_stream_error(exc):
            return self.stream_error(error_text(exc.body) or exc.message)
        return super().stream_broke_off(translated, exc, sent)

    def check_event(self, event: object) -> None:
        """Raise for an event that reports an error inside a 200 stream (OpenRouter)."""

    def check_reply(self, response: object) -> None:
        """Raise for a 200 reply that reports an error instead of a completion (OpenRouter)."""

    def usage_in(self, body: object) -> Usage | None:
        """The usage a reply or stream event reports (OpenRouter adds its cost)."""
        return usage_of(body)

    async def list_models(self) -> list[ModelInfo]:
        """The models `GET /models` lists."""
        try:
            page = await self._client().models.list()
        except UPSTREAM_FAILURES as exc:
            raise self.translate(exc) from exc
        return [
            ModelInfo(id=model.id, max_context_length=context_from_meta(model))
            for model in page.data
        ]

    # ── plumbing ────────────────────────────────────────────────────────────

    def _options(self) -> RequestOptions:
        headers = self.extra_headers()
        return {**_BEARER, "headers": headers} if headers else _BEARER

    def _client(self) -> AsyncOpenAI:
        transport = get_settings().llm_http_transport
        return pooled_client(self.config.base_url, self.api_key(), self.config.timeout, transport)

    async def _sent(self, request: ChatRequest, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, resent once at once on a first attempt that went to a pooled connection
        the server had closed (llama.cpp closes after a stream: the request never left);
        failures as LLMErrors."""
        try:
            return await call()
        except UPSTREAM_FAILURES as exc:
            if request.attempt or not stale_connection(exc):
                raise self.translate(exc) from exc
            logger.debug("llm: pooled connection was closed; resending")
        try:
            return await call()
        except UPSTREAM_FAILURES as exc:
            raise self.translate(exc) from exc

    def not_a_completion(self, response: object) -> LLMError:
        """The error for a 200 whose body is not a chat completion."""
        said = response.get("error") if isinstance(response, dict) else None
        if isinstance(said, str):
            # LM Studio answers unknown paths with HTTP 200 and {"error": "Unexpected endpoint"}.
            return self.upstream_error(
                f"{self.spec.display_name} at {self.url} answered '{short_reason(said)}': "
                f"check that {self.spec.env_prefix}_BASE_URL ends with /v1"
            )
        return self.invalid_reply_error("a reply that is not a chat completion")

    def translate(self, exc: Exception) -> LLMError:
        """Turn an SDK (or transport) exception into an LLMError with an actionable message."""
        if isinstance(exc, LLMError):
            return exc
        if timed_out(exc):
            return self.timeout_error(accepted=accepted_then_timed_out(exc))
        if isinstance(exc, openai.APIConnectionError) and not refused(exc):
            # Connected, but the reply broke off (aiohttp ClientPayloadError, httpx
            # RemoteProtocolError): the server is there, so "cannot connect" would mislead.
            return self.broken_reply_error()
        if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is one too
            return self.connection_error()
        if isinstance(exc, openai.APIStatusError):
            return self.translate_status(exc.status_code, upstream_message(exc), exc)
        if isinstance(exc, UnicodeEncodeError):  # raised building the request: nothing sent
            return LLMInvalidRequestError(
                "The request holds text that is not valid Unicode (a lone UTF-16 surrogate "
                "such as \\ud800): send well-formed text",
                provider=self.spec.provider,
            )
        if isinstance(exc, ValueError):
            return self.invalid_reply_error()
        return self.invalid_reply_error(f"something unexpected ({type(exc).__name__})")

    def translate_status(self, status: int, message: str, exc: openai.APIStatusError) -> LLMError:
        """The LLMError for an HTTP error status; providers add their own cases first."""
        return self.status_error(status, message, retry_after=retry_after_of(exc))


def in_stream_error(exc: Exception) -> TypeGuard[openai.APIError]:
    """True for the SDK's error for an `error` event inside a 200 stream."""
    # APIStatusError, APIConnectionError and APIResponseValidationError are APIErrors too;
    # only the bare class comes from an error event inside the stream.
    return isinstance(exc, openai.APIError) and not isinstance(
        exc,
        openai.APIStatusError | openai.APIConnectionError | openai.APIResponseValidationError,
    )


def error_text(error: object) -> str | None:
    """`message (code N)` from an OpenAI-style `{"code": N, "message": ...}`, or the string."""
    if isinstance(error, str):
        return error or None
    if not isinstance(error, dict):
        return None
    message, code = error.get("message"), error.get("code")
    text = message if isinstance(message, str) and message else None
    if text is not None and isinstance(code, int | str) and not isinstance(code, bool):
        return f"{text} (code {code})"
    return text
