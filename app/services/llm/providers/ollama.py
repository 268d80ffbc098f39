"""Ollama, spoken to with its native API (`/api/chat`, `/api/embed`, `/api/tags`, `/api/ps`,
`/api/show`).

Not its OpenAI-compatible `/v1`: that one cannot set the context size (`num_ctx`) and sends
temperature 1.0 when the caller asked for none. Replies stream as NDJSON, one JSON object
a line; the last has `"done": true`. An error after the 200 arrives as an `{"error": ...}` line.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import aiohttp
import orjson

from app.core.config import LLMProvider, Settings
from app.services.llm.config import OllamaConfig, ProviderConfig
from app.services.llm.errors import LLMError, LLMInvalidRequestError, LLMModelNotFoundError
from app.services.llm.protocol import (
    Capabilities,
    ChatRequest,
    Completion,
    EmbeddingRequest,
    Embeddings,
    Message,
    ModelInfo,
    StreamChunk,
    ToolCall,
    Usage,
)
from app.services.llm.providers.base import ProviderSpec, needs_no_credentials, no_key
from app.services.llm.providers.http import (
    MAX_BODY,
    MAX_ERROR_BODY,
    TRANSPORT_FAILURES,
    HttpWire,
    read_bounded,
    seconds,
)
from app.services.llm.providers.wire import short_reason, vector_of
from app.services.llm.tools import (
    MAX_TOOL_CALLS,
    call_names,
    calls_in,
    checked_call,
    parsed_arguments,
    whole_call_deltas,
)

MAX_LINE = 1024 * 1024  # one NDJSON line of a stream; Ollama's are a token or two
SHOW_LIMIT = 20  # `/api/show` calls per discovery (one per model, for its context length)
SHOW_TIMEOUT = 10.0
EMBEDDING_BATCH = 512  # texts per /api/embed: a slow machine's reply stays within the timeout


class OllamaWire(HttpWire):
    """One attempt at a time against an Ollama server's native API."""

    # Ollama's API has no `tool_choice`: "required" and a named function are refused with
    # a 400 (check_tools_supported) rather than sent as a wish the model may ignore.
    capabilities: Capabilities = Capabilities(
        json_schema=True,
        json_object=True,
        context_length=True,
        loaded_state=True,
        forced_tool_choice=False,
        embeddings=True,
    )

    def __init__(self, spec: ProviderSpec, config: ProviderConfig) -> None:
        super().__init__(spec, config)
        # The native API is at the root; an OpenAI-style `.../v1` base URL is a common slip.
        self.root = config.base_url.rstrip("/").removesuffix("/v1")
        ollama = config if isinstance(config, OllamaConfig) else None
        self.num_ctx = ollama.num_ctx if ollama else None
        self.keep_alive = ollama.keep_alive if ollama else None

    # ── chat ────────────────────────────────────────────────────────────────

    async def complete(self, request: ChatRequest) -> Completion:
        """One non-streamed `/api/chat` reply."""
        model = request.model or self.model
        body = self._chat_body(request, False)
        response = await self._send("POST", "/api/chat", body, model, resend=not request.attempt)
        raw = await self.read(response)
        reply = self._object(raw)
        if "error" in reply:
            raise self.invalid_reply_error(f"an error: {short_reason(str(reply['error']))}")
        message = _dict(reply.get("message"))
        calls = self._tool_calls(message)
        finish = _text(reply, "done_reason") or ("stop" if reply.get("done") else None)
        return Completion(
            text=_text(message, "content"),
            finish_reason="tool_calls" if calls and finish == "stop" else finish,
            reasoning=_text(message, "thinking") or None,
            usage=_usage(reply),
            model=_text(reply, "model"),
            tool_calls=calls,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """`/api/chat` as NDJSON lines; the last chunk carries finish reason and usage."""
        model = request.model or self.model
        body = self._chat_body(request, True)
        response = await self._send("POST", "/api/chat", body, model, resend=not request.attempt)
        finished = False
        called = 0
        try:
            yield StreamChunk()  # Ollama accepted (200): the relay may start its reply
            async with aclosing(self._lines(response)) as lines:
                async for line in lines:
                    item = self._object(line)
                    if "error" in item:
                        raise self.stream_error(str(item["error"]))
                    message = _dict(item.get("message"))
                    text, thinking = _text(message, "content"), _text(message, "thinking")
                    # Ollama streams each tool call whole: one delta per call, numbered on.
                    calls = whole_call_deltas(self._tool_calls(message), called)
                    called += len(calls)
                    if text or thinking or calls:
                        yield StreamChunk(text=text, reasoning=thinking, tool_calls=calls)
                    if item.get("done") is True:
                        finished = True
                        finish = _text(item, "done_reason") or "stop"
                        yield StreamChunk(
                            finish_reason="tool_calls" if called and finish == "stop" else finish,
                            usage=_usage(item),
                            model=_text(item, "model"),
                        )
                        return
            raise self.broken_reply_error()
        finally:
            # Closed early (the caller went away) or failed: drop the connection at once,
            # so that Ollama stops generating; a finished reply returns it to the pool.
            if finished:
                response.release()
            else:
                response.close()

    def _chat_body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        stop = [request.stop] if isinstance(request.stop, str) else request.stop
        options = {
            "temperature": request.temperature,
            "num_predict": request.max_tokens,
            "seed": request.seed,
            "stop": stop,
            "num_ctx": self.num_ctx,
        }
        names = call_names(request.messages)
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [self._message(message, names) for message in request.messages],
            "stream": stream,
        }
        if request.tools and request.tool_choice != "none":  # "none": the model sees no tools
            body["tools"] = list(request.tools)
        # Unset options are left out, so that the model's own defaults apply.
        if sent := {name: value for name, value in options.items() if value is not None}:
            body["options"] = sent
        if self.keep_alive is not None:
            body["keep_alive"] = _keep_alive(self.keep_alive)
        if (format_ := _format(request.response_format)) is not None:
            body["format"] = format_
        return body

    def _tool_calls(self, message: dict[str, Any]) -> tuple[ToolCall, ...]:
        """A reply message's `tool_calls` (arguments as an object; an id since Ollama 0.12)."""
        calls = message.get("tool_calls")
        if calls is None:
            return ()
        try:
            if not isinstance(calls, list) or len(calls) > MAX_TOOL_CALLS:
                raise ValueError(f"`tool_calls` that is not a list of at most {MAX_TOOL_CALLS}")
            return tuple(
                checked_call(
                    _dict(call).get("id"),
                    _dict(_dict(call).get("function")).get("name"),
                    _dict(_dict(call).get("function")).get("arguments"),
                    f"tool_calls[{index}]",
                )
                for index, call in enumerate(calls)
            )
        except ValueError as exc:
            raise self.invalid_reply_error(f"a malformed tool call ({exc})") from None

    def _message(self, message: Message, names: dict[str, str]) -> dict[str, Any]:
        """An OpenAI-style message in Ollama's shape: content is a string, images a list of
        base64 strings, a tool call's arguments an object, a tool result names its function
        (`tool_name`) where OpenAI's names the call's id."""
        content = message.get("content")
        if message.get("role") == "tool":
            text = content if isinstance(content, str) else _joined_text(content)
            answer = {"role": "tool", "content": text}
            name = names.get(str(message.get("tool_call_id")))
            return {**answer, "tool_name": name} if name else answer
        if calls := calls_in(message):
            text = content if isinstance(content, str) else _joined_text(content)
            return {
                "role": message.get("role"),
                "content": text,
                "tool_calls": [
                    {
                        "function": {
                            "name": _dict(call.get("function")).get("name"),
                            "arguments": parsed_arguments(call),
                        }
                    }
                    for call in calls
                ],
            }
        if not isinstance(content, list):
            return {"role": message.get("role"), "content": content or ""}
        texts: list[str] = []
        images: list[str] = []
        for item in content:
            part = _dict(item)
            if part.get("type") == "text":
                texts.append(_text(part, "text"))
            elif part.get("type") == "image_url":
                url = _text(_dict(part.get("image_url")), "url")
                head, _, data = url.partition(";base64,")
                if not head.startswith("data:") or not data:
                    raise LLMInvalidRequestError(
                        "Ollama takes images inline only: send them as data: URLs (base64)",
                        provider=self.spec.provider,
                    )
                images.append(data)
        result: dict[str, Any] = {"role": message.get("role"), "content": "\n".join(texts)}
        if images:
            result["images"] = images
        return result

    # ── discovery ───────────────────────────────────────────────────────────

    # ── embeddings ──────────────────────────────────────────────────────────

    def embedding_batch(self, model: str) -> int:
        """Texts per `/api/embed` call."""
        return EMBEDDING_BATCH

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """`/api/embed` with the texts as `input`: `embeddings` in input order, the tokens
        read as `prompt_eval_count`. `dimensions` goes to models that can shorten their
        vectors (Ollama refuses it for the others)."""
        body: dict[str, Any] = {"model": request.model, "input": list(request.texts)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if self.num_ctx is not None:
            body["options"] = {"num_ctx": self.num_ctx}
        if self.keep_alive is not None:
            body["keep_alive"] = _keep_alive(self.keep_alive)
        response = await self._send(
            "POST", "/api/embed", body, request.model, resend=not request.attempt
        )
        reply = self._object(await self.read(response))
        listed = reply.get("embeddings")
        vectors = [vector_of(item) for item in listed] if isinstance(listed, list) else []
        if len(vectors) != len(request.texts) or any(v is None for v in vectors):
            raise self.invalid_reply_error(
                f"{len(vectors)} embeddings for {len(request.texts)} inputs, or one that is "
                "not a list of numbers"
            )
        return Embeddings(
            [v for v in vectors if v is not None],
            usage=Usage(prompt_tokens=_int(reply.get("prompt_eval_count")) or 0),
            model=_text(reply, "model"),
        )

    async def list_models(self) -> list[ModelInfo]:
        """Downloaded models (`/api/tags`), whether each is loaded (`/api/ps`), and context
        lengths (`/api/ps` for loaded ones, `/api/show` for the first few others)."""
        tags, running = await asyncio.gather(self._get_json("/api/tags"), self._running())
        loaded: set[str] = set()
        contexts: dict[str, int | None] = {}
        for item in _items(running):
            for name in {_text(item, "name"), _text(item, "model")} - {""}:
                loaded.add(name)
                contexts[name] = _int(item.get("context_length"))  # as loaded, with num_ctx
        names = [name for item in _items(tags) if (name := _text(item, "name"))]
        unknown = [name for name in names if contexts.get(name) is None][:SHOW_LIMIT]
        shown = await asyncio.gather(*(self._context_length(name) for name in unknown))
        contexts.update(zip(unknown, shown, strict=True))
        return [
            ModelInfo(
                id=_text(item, "name"),
                state=None if running is None else ("loaded" if name in loaded else "not-loaded"),
                max_context_length=contexts.get(name),
                quantization=_text(_dict(item.get("details")), "quantization_level") or None,
            )
            for item in _items(tags)
            if (name := _text(item, "name"))
        ]

    async def _get_json(self, path: str) -> dict[str, Any]:
        return self._object(await self.read(await self._send("GET", path, None, self.model)))

    async def _running(self) -> dict[str, Any] | None:
        try:
            return await self._get_json("/api/ps")
        except LLMError:
            return None  # the listing goes without loaded state

    async def _context_length(self, name: str) -> int | None:
        """The model's trained context length from `/api/show` (None on any failure: it is
        only a detail of the listing)."""
        try:
            async with self.session(self.root).post(
                f"{self.root}/api/show",
                json={"model": name},
                timeout=aiohttp.ClientTimeout(total=min(SHOW_TIMEOUT, self.config.timeout)),
            ) as response:
                raw = await read_bounded(response, MAX_BODY)
                if response.status != 200 or raw is None:
                    return None
            info = _dict(_dict(orjson.loads(raw)).get("model_info"))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None
        return next(
            (_int(v) for k, v in info.items() if k.endswith(".context_length") and _int(v)), None
        )

    # ── the wire ────────────────────────────────────────────────────────────

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        model: str,
        *,
        resend: bool = True,
    ) -> aiohttp.ClientResponse:
        """The response to one request, its status checked; the caller releases it.
        `resend`: whether a request that went to a stale pooled connection is sent once more
        (a chat call's first attempt only: see `ChatRequest.attempt`)."""
        payload = None if body is None else self.encode(body)
        response = await self.request(
            self.session(self.root), method, f"{self.root}{path}", payload, resend=resend
        )
        if response.status < 400:
            return response
        raise self._status_error(response, await self.error_body(response), model)

    def _status_error(self, response: aiohttp.ClientResponse, raw: bytes, model: str) -> LLMError:
        try:
            message = str(_dict(orjson.loads(raw)).get("error") or "")
        except ValueError:
            message = ""
        message = message or raw[:MAX_ERROR_BODY].decode(errors="replace") or response.reason or ""
        lowered = message.lower()
        if response.status == 404 and "model" in lowered and "not found" in lowered:
            return LLMModelNotFoundError(
                f"Model '{model}' is not available on Ollama at {self.url} "
                f"({short_reason(message)}): pull it with `ollama pull {model}`, or list what "
                "is there with `ollama list`",
                provider=self.spec.provider,
                upstream=self.url,
            )
        return self.status_error(
            response.status, message, retry_after=seconds(response.headers.get("Retry-After"))
        )

    async def _lines(self, response: aiohttp.ClientResponse) -> AsyncGenerator[bytes]:
        """The non-blank NDJSON lines of a streamed reply, each at most MAX_LINE bytes."""
        pending = b""
        try:
            async for data in response.content.iter_any():
                pending += data
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_LINE or any(len(line) > MAX_LINE for line in lines):
                    raise self.invalid_reply_error(f"a stream line over {MAX_LINE // 1024} KiB")
                for line in lines:
                    if line.strip():
                        yield line
        except TRANSPORT_FAILURES as exc:
            raise self.failure(exc) from exc
        if pending.strip():
            yield pending

    def _object(self, raw: bytes) -> dict[str, Any]:
        try:
            value = orjson.loads(raw)
        except ValueError:
            raise self.invalid_reply_error() from None
        if not isinstance(value, dict):
            raise self.invalid_reply_error("JSON that is not an object")
        return value


def _format(response_format: dict[str, Any] | None) -> dict[str, Any] | str | None:
    """Ollama's `format`: the JSON Schema itself, or "json" for JSON without a schema."""
    kind = (response_format or {}).get("type")
    if kind == "json_schema":
        schema = _dict(_dict((response_format or {}).get("json_schema")).get("schema"))
        return schema or "json"
    return "json" if kind == "json_object" else None


def _keep_alive(value: str) -> str | float:
    # Ollama reads a string as a Go duration ("5m", "1h"); a bare number ("-1", "0", "300")
    # must be sent as a JSON number of seconds, as OLLAMA_KEEP_ALIVE takes it.
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def _usage(item: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=_int(item.get("prompt_eval_count")) or 0,
        completion_tokens=_int(item.get("eval_count")) or 0,
    )


def _joined_text(content: object) -> str:
    """The text parts of a message's content list, joined (a tool result has no images)."""
    parts = content if isinstance(content, list) else []
    return "\n".join(
        _text(_dict(part), "text") for part in parts if _dict(part).get("type") == "text"
    )


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    models = (body or {}).get("models")
    return [item for item in models if isinstance(item, dict)] if isinstance(models, list) else []


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _config_from(settings: Settings, model: str) -> OllamaConfig:
    """OLLAMA_BASE_URL, OLLAMA_TIMEOUT, OLLAMA_MAX_RETRIES, OLLAMA_NUM_CTX and
    OLLAMA_KEEP_ALIVE with `model`."""
    return OllamaConfig(
        base_url=settings.ollama_base_url,
        default_model=model or settings.ollama_model or "",
        timeout=settings.ollama_timeout,
        max_retries=settings.ollama_max_retries,
        num_ctx=settings.ollama_num_ctx,
        keep_alive=settings.ollama_keep_alive,
    )


SPEC = ProviderSpec(
    provider=LLMProvider.OLLAMA,
    display_name="Ollama",
    env_prefix="OLLAMA",
    connection_hint="is Ollama running? Start it with `ollama serve`, and check OLLAMA_BASE_URL",
    local=True,
    config_from=_config_from,
    make_wire=lambda spec, config: OllamaWire(spec, config),
    credentials_set=no_key,
    missing_credentials=needs_no_credentials,
)
