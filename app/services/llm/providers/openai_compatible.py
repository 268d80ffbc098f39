"""The wire shared by every upstream that speaks OpenAI's chat-completions protocol (LM Studio,
OpenAI, OpenRouter), on aiohttp directly with one pooled session per upstream and key.
Provider modules subclass `OpenAIWire` and add only what differs.

Our own client, not the official `openai` SDK: measured side by side in one process
(`benchmarks/client_floor.py`), the SDK's leanest path (`client.post(..., cast_to=object)`
on its aiohttp transport) cost ~395 µs of CPU per call and ours ~85 µs, and a 20-chunk
stream ~660-1,080 µs against ~210 µs; the upstream itself answers in ~110 µs. What the SDK
did for us is here in a few lines: the Bearer header, JSON both ways (orjson), SSE, and an
upstream's error text from its error body.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import orjson

from app.services.llm.errors import LLMError, LLMInvalidRequestError
from app.services.llm.protocol import (
    Capabilities,
    ChatRequest,
    Completion,
    EmbeddingRequest,
    Embeddings,
    ModelInfo,
    StreamChunk,
    Usage,
)
from app.services.llm.providers.clients import connect_timeout
from app.services.llm.providers.http import TRANSPORT_FAILURES, HttpWire, drain, seconds
from app.services.llm.providers.wire import (
    finish_reason_of,
    first_choice,
    part_of,
    reasoning_of,
    short_reason,
    text_of,
    usage_of,
    vector_of,
)
from app.services.llm.tools import openai_tool_call_deltas, openai_tool_calls

MAX_LINE = 1024 * 1024  # one line of a stream's SSE; a chunk carries a token or a few
# Inputs per embeddings request (OpenAI allows 2,048): 2,048 vectors of 1,536 floats are a
# 59 MiB reply that takes ~0.4 s of CPU to read and re-encode, in one piece on the event
# loop; 3,072 floats would pass MAX_BODY. 256 keeps a reply under ~15 MiB.
EMBEDDING_BATCH = 256
_STREAM_ERROR = "An error occurred during streaming"  # an `error` event without a message


class UpstreamRefused(Exception):
    """An HTTP error status from the upstream with its error text, before it becomes an
    LLMError (`OpenAIWire.translate`); callers that expect some statuses look first."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class OpenAIWire(HttpWire):
    """OpenAI's chat-completions wire."""

    capabilities: Capabilities = Capabilities(embeddings=True)
    # As the `openai` SDK did before (Ollama's own client never did).
    proxy_from_env = True
    embedding_dimensions = True
    """Whether the upstream takes `dimensions` on an embeddings request."""

    def api_key(self) -> str:
        """The key sent as Bearer; upstreams without auth get a placeholder."""
        key = getattr(self.config, "api_key", None)
        return key.get_secret_value() if key is not None else "not-needed"

    def extra_headers(self) -> dict[str, str] | None:
        """Headers every request carries besides auth (OpenRouter's attribution)."""
        return None

    def default_headers(self) -> Mapping[str, str]:
        """Auth and `extra_headers`, set once on the pooled session."""
        return {"Authorization": f"Bearer {self.api_key()}", **(self.extra_headers() or {})}

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
        if request.tools:
            body["tools"] = list(request.tools)
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        """One chat completion, read from the parsed JSON body (only the fields we use:
        `wire.py`)."""
        response = await self.call(
            "POST", "/chat/completions", self.body(request), resend=not request.attempt
        )
        self.check_reply(response)
        choice = first_choice(response)
        if choice is None:
            raise self.not_a_completion(response)
        message = part_of(choice, "message")
        answered_by = response.get("model") if isinstance(response, dict) else None
        try:
            tool_calls = openai_tool_calls(message)
        except ValueError as exc:
            raise self.invalid_reply_error(f"a malformed tool call ({exc})") from None
        return Completion(
            text=text_of(message),
            finish_reason=finish_reason_of(choice),
            reasoning=reasoning_of(message),
            usage=self.usage_in(response) or Usage(),
            model=answered_by if isinstance(answered_by, str) else "",
            tool_calls=tool_calls,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The completion's SSE events as chunks; the last carries finish reason and usage."""
        body = self.body(request)
        body.update(stream=True, stream_options={"include_usage": True})
        try:
            response = await self.send(
                "POST", "/chat/completions", body, resend=not request.attempt
            )
        except UpstreamRefused as exc:
            raise self.translate(exc) from None
        finish_reason: str | None = None
        usage: Usage | None = None
        answered_by = ""
        sent = 0
        finished = False
        events = SSEDecoder()
        try:
            yield StreamChunk()  # the upstream accepted (200): the relay may start its reply
            async for received in response.content.iter_any():
                for data in events.feed(received):
                    if data.startswith(b"[DONE]"):
                        await drain(response)
                        finished = True
                        break
                    event = orjson.loads(data)
                    if isinstance(event, dict) and event.get("error"):
                        # An `error` event inside the 200 (OpenAI, OpenRouter): the upstream
                        # reporting a failed generation, not a connection breaking off, so
                        # an error that is not retried.
                        raise self.stream_error(error_text(event["error"]) or _STREAM_ERROR)
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
                    try:
                        calls = openai_tool_call_deltas(delta)
                    except ValueError as exc:
                        raise self.invalid_reply_error(f"a malformed tool call ({exc})") from None
                    if text or reasoning or calls:
                        sent += 1
                        yield StreamChunk(text=text, reasoning=reasoning, tool_calls=calls)
                if finished:
                    break
            else:
                finished = True  # the body ended: the connection may serve the next call
        except LLMError:
            raise
        except Exception as exc:
            raise self.stream_broke_off(self.translate(exc), exc, sent) from exc
        finally:
            # Closed early (the caller went away) or failed: drop the connection at once, so
            # that the upstream stops generating; a finished reply returns it to the pool.
            if finished:
                response.release()
            else:
                response.close()
        if finish_reason is not None:
            yield StreamChunk(finish_reason=finish_reason, usage=usage, model=answered_by)

    def embedding_batch(self, model: str) -> int:
        """Inputs per embeddings request."""
        return EMBEDDING_BATCH

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """`POST /embeddings` with every text as one `input` list; vectors in input order."""
        body: dict[str, Any] = {"model": request.model, "input": list(request.texts)}
        if request.dimensions is not None:
            if not self.embedding_dimensions:
                raise LLMInvalidRequestError(
                    f"{self.spec.display_name} does not take `dimensions`: send the request "
                    "without it (the model's own size is used)",
                    provider=self.spec.provider,
                )
            body["dimensions"] = request.dimensions
        response = await self.call("POST", "/embeddings", body, resend=not request.attempt)
        self.check_reply(response)
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, list):
            if isinstance(response, dict) and isinstance(response.get("error"), str):
                raise self.not_a_completion(response)  # LM Studio's "Unexpected endpoint"
            raise self.invalid_reply_error("a reply that is not a list of embeddings")
        ordered = sorted((item for item in data if isinstance(item, dict)), key=_index)
        vectors = [vector_of(item.get("embedding")) for item in ordered]
        if len(vectors) != len(request.texts) or any(v is None for v in vectors):
            raise self.invalid_reply_error(
                f"{len(vectors)} embeddings for {len(request.texts)} inputs, or one that is "
                "not a list of numbers"
            )
        answered_by = response.get("model") if isinstance(response, dict) else None
        return Embeddings(
            [v for v in vectors if v is not None],
            usage=self.usage_in(response) or Usage(),
            model=answered_by if isinstance(answered_by, str) else "",
        )

    def check_event(self, event: object) -> None:
        """Raise for an event that reports an error inside a 200 stream (OpenRouter)."""

    def check_reply(self, response: object) -> None:
        """Raise for a 200 reply that reports an error instead of a completion (OpenRouter)."""

    def usage_in(self, body: object) -> Usage | None:
        """The usage a reply or stream event reports (OpenRouter adds its cost)."""
        return usage_of(body)

    async def list_models(self) -> list[ModelInfo]:
        """The models `GET /models` lists."""
        listing = await self.call("GET", "/models")
        return [
            ModelInfo(id=item["id"], max_context_length=context_from_meta(item))
            for item in self.listed(listing)
        ]

    def listed(self, listing: object) -> list[dict[str, Any]]:
        """The entries of a `GET /models` reply that have an id."""
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise self.invalid_reply_error("a model list without `data`")
        return [item for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]

    # ── plumbing ────────────────────────────────────────────────────────────

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        resend: bool = True,
        read_timeout: float | None = None,
    ) -> object:
        """`fetch`, with an error status as its LLMError."""
        try:
            return await self.fetch(method, path, body, resend=resend, read_timeout=read_timeout)
        except UpstreamRefused as exc:
            raise self.translate(exc) from None

    async def fetch(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        resend: bool = True,
        read_timeout: float | None = None,
    ) -> object:
        """The decoded reply to one request: its JSON, or its text when the upstream did not
        say it is JSON. UpstreamRefused for an error status, an LLMError for the rest."""
        response = await self.send(method, path, body, resend=resend, read_timeout=read_timeout)
        raw = await self.read(response)
        if not response.content_type.endswith("json"):
            return raw.decode(errors="replace")
        try:
            return orjson.loads(raw)
        except ValueError:
            raise self.invalid_reply_error() from None

    async def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        resend: bool,
        read_timeout: float | None = None,
    ) -> aiohttp.ClientResponse:
        """The 2xx response to one request (`path` under the base URL, or a whole URL); the
        caller releases it. UpstreamRefused for an error status, an LLMError for the rest."""
        base_url = self.config.base_url
        url = path if "://" in path else f"{base_url}{path}"
        payload = None if body is None else self.encode(body)
        timeouts = None
        if read_timeout is not None:
            connect = connect_timeout(self.config.timeout)
            timeouts = aiohttp.ClientTimeout(total=None, connect=connect, sock_read=read_timeout)
        response = await self.request(
            self.session(base_url), method, url, payload, resend=resend, timeouts=timeouts
        )
        if response.status < 300:
            return response
        raw = await self.error_body(response)
        raise UpstreamRefused(
            response.status,
            error_message(raw, response.status),
            seconds(response.headers.get("Retry-After")),
        )

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
        """Turn a failure of a call into an LLMError with an actionable message."""
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, UpstreamRefused):
            return self.translate_status(exc.status, exc.message, exc.retry_after)
        if isinstance(exc, TRANSPORT_FAILURES):
            return self.failure(exc)
        if isinstance(exc, ValueError):
            return self.invalid_reply_error()
        return self.invalid_reply_error(f"something unexpected ({type(exc).__name__})")

    def translate_status(self, status: int, message: str, retry_after: float | None) -> LLMError:
        """The LLMError for an HTTP error status; providers add their own cases first."""
        return self.status_error(status, message, retry_after=retry_after)


def _index(item: dict[str, Any]) -> int:
    index = item.get("index")
    return index if isinstance(index, int) else 0


class SSEDecoder:
    """Server-sent events from bytes as they arrive: `feed` returns the `data` of each event
    the bytes complete. An event ends at a blank line; its `data:` lines are joined by
    newlines; other fields and comments are skipped."""

    __slots__ = ("_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, received: bytes) -> list[bytes]:
        """The data of every event that `received` completes (often none, or one)."""
        *lines, self._pending = (self._pending + received).split(b"\n")
        if len(self._pending) > MAX_LINE:
            raise ValueError(f"a stream line over {MAX_LINE // 1024} KiB")
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        return events


def error_message(raw: bytes, status: int) -> str:
    """The error text in an error status's body: LM Studio sends `{"error": "text"}`,
    OpenAI `{"error": {"message": "text", ...}}`, others plain text."""
    text = raw.decode(errors="replace")
    try:
        body: object = orjson.loads(raw)
    except ValueError:
        return text.strip()
    inner = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(inner, str):
        return inner
    if isinstance(inner, dict):
        nested = inner.get("error", inner)
        if isinstance(nested, str):
            return nested
        if isinstance(nested, dict) and isinstance(nested.get("message"), str):
            return str(nested["message"])
        if isinstance(inner.get("message"), str):
            return str(inner["message"])
    return text[:300] or f"Error code: {status}"


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


def context_from_meta(model: dict[str, Any]) -> int | None:
    """The context llama.cpp's server was started with (`meta.n_ctx`), when it says."""
    meta = model.get("meta")
    n_ctx = meta.get("n_ctx") if isinstance(meta, dict) else None
    return n_ctx if isinstance(n_ctx, int) else None
