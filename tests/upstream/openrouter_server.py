"""A stand-in OpenRouter on a real loopback socket, speaking its OpenAI-style API.

``OpenRouterStandIn`` runs an aiohttp app in a daemon thread with its own event loop. It
serves ``POST /api/v1/chat/completions`` (one JSON body, or SSE) and ``GET /api/v1/models``,
records every request, and takes scripts, one per request, from a FIFO::

    with OpenRouterStandIn(api_key="sk-or-test") as srv:
        srv.error_mid_stream(["Hello", " there"], "Provider returned error")
        ...                                    # point the wire at srv.base_url
        assert srv.chat_requests[0].json["model"] == "openai/gpt-4o"

Shapes follow OpenRouter's docs: an error is ``{"error": {"code": N, "message": ...}}``
with status N; a reply's ``usage`` carries ``cost`` (credits); a stream may hold
``: OPENROUTER PROCESSING`` comment lines (keep-alives); an error during generation arrives
in the 200 stream as an event with a top-level ``error`` and ``finish_reason: "error"``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import embedding
from .completion import count_prompt_tokens, last_user_text, split_tokens
from .server import RecordedRequest
from .threaded import ThreadedApp
from .tool_use import (
    PlannedCall,
    last_tool_result,
    openai_call,
    openai_call_pieces,
    plan_from_openai,
    tool_result_text,
)

__all__ = ["DEFAULT_MODELS", "PROCESSING", "OpenRouterStandIn"]

PROCESSING = b": OPENROUTER PROCESSING\n\n"
DEFAULT_COST = 0.00042
DEFAULT_MODELS: tuple[dict[str, Any], ...] = (
    {
        "id": "openai/gpt-4o",
        "canonical_slug": "openai/gpt-4o",
        "name": "OpenAI: GPT-4o",
        "created": 1715558400,
        "context_length": 128000,
        "architecture": {"modality": "text+image->text", "tokenizer": "GPT"},
        "pricing": {"prompt": "0.0000025", "completion": "0.00001"},
        "top_provider": {"context_length": 128000, "is_moderated": True},
        "per_request_limits": None,
        "supported_parameters": [
            "max_tokens",
            "response_format",
            "seed",
            "stop",
            "structured_outputs",
            "temperature",
            "tools",
        ],
    },
    {
        "id": "meta-llama/llama-3.1-8b-instruct",
        "canonical_slug": "meta-llama/llama-3.1-8b-instruct",
        "name": "Meta: Llama 3.1 8B Instruct",
        "created": 1721692800,
        "context_length": 131072,
        "pricing": {"prompt": "0.00000002", "completion": "0.00000003"},
        "supported_parameters": ["max_tokens", "response_format", "temperature"],
    },
)
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass
class _Script:
    kind: str  # reply | fail | error_mid_stream | error_in_body
    route: str = "chat"  # chat | models
    text: str | None = None
    pieces: Sequence[str] = ()
    cost: float | None = DEFAULT_COST
    status: int = 500
    message: str = ""
    code: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    in_choice: bool = False
    keep_alives: int = 0


class OpenRouterStandIn(ThreadedApp):
    """A scriptable OpenRouter on a free 127.0.0.1 port.

    Args:
        api_key: Requests without ``Authorization: Bearer <api_key>`` get OpenRouter's 401.
        models: What ``GET /models`` lists (default ``DEFAULT_MODELS``).
    """

    def __init__(
        self, *, api_key: str = "sk-or-test", models: Sequence[dict[str, Any]] | None = None
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = list(DEFAULT_MODELS if models is None else models)
        self._records: list[RecordedRequest] = []
        self._scripts: deque[_Script] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api/v1`` (what OPENROUTER_BASE_URL would hold)."""
        return f"http://127.0.0.1:{self.port}/api/v1"

    def reset(self) -> None:
        """Forget scripts and records; restore the key and the models."""
        with self._lock:
            self._scripts.clear()
            self._records.clear()
        self.api_key = "sk-or-test"
        self.models = list(DEFAULT_MODELS)

    def build_app(self) -> web.Application:
        """OpenRouter's chat and models routes, behind its key check."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/api/v1/models", self._models)
        app.router.add_post("/api/v1/embeddings", self._embeddings)
        return app

    # ── scripting ───────────────────────────────────────────────────────────

    def reply(self, text: str, *, cost: float | None = DEFAULT_COST, keep_alives: int = 0) -> None:
        """Answer the next chat request with this text; ``cost=None`` leaves ``usage.cost``
        out; ``keep_alives`` PROCESSING comments go before and between streamed events."""
        self._push(_Script("reply", text=text, cost=cost, keep_alives=keep_alives))

    def fail(
        self,
        status: int,
        message: str = "Internal Server Error",
        *,
        route: str = "chat",
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer with OpenRouter's error body and this status (e.g. 402, or 429 with
        ``{"Retry-After": "1"}``)."""
        for _ in range(times):
            self._push(
                _Script("fail", route, status=status, message=message, headers=headers or {})
            )

    def error_mid_stream(
        self,
        pieces: Sequence[str],
        message: str = "Provider returned error",
        *,
        code: Any = 502,
        in_choice: bool = False,
    ) -> None:
        """Stream these text pieces, then an event with the error and ``finish_reason:
        "error"``: the error object at the top (as OpenRouter documents it), or, with
        ``in_choice``, only inside the choice."""
        script = _Script("error_mid_stream", pieces=pieces, message=message, code=code)
        script.in_choice = in_choice
        self._push(script)

    def error_in_body(self, message: str = "Provider returned error", *, code: Any = 502) -> None:
        """Answer a non-streamed request 200 with only ``{"error": {...}}``."""
        self._push(_Script("error_in_body", message=message, code=code))

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completion requests, in arrival order."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embeddings_requests(self) -> list[RecordedRequest]:
        """The embeddings requests, in arrival order."""
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    def _push(self, script: _Script) -> None:
        with self._lock:
            self._scripts.append(script)

    def _take(self, route: str) -> _Script | None:
        with self._lock:
            for script in self._scripts:
                if script.route == route:
                    self._scripts.remove(script)
                    return script
        return None

    # ── serving ─────────────────────────────────────────────────────────────

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read() if request.body_exists else b""
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=raw,
            json=parsed,
            at=time.monotonic(),
        )
        with self._lock:
            self._records.append(record)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "No cookie auth credentials found")
        response: web.StreamResponse = await handler(request)
        return response

    async def _models(self, request: web.Request) -> web.StreamResponse:
        script = self._take("models")
        if script is not None and script.kind == "fail":
            return _error(script.status, script.message, script.headers)
        return _json({"data": self.models})

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenRouter's embeddings: OpenAI's shape, with `usage.cost`."""
        body = orjson.loads(await request.read())
        script = self._take("embeddings")
        if script is not None and script.kind == "fail":
            return _error(script.status, script.message, script.headers)
        texts = embedding.texts_of(body.get("input"))
        if texts is None or not isinstance(body.get("model"), str):
            return _error(400, "Input required: a string or an array of strings")
        dimensions = body.get("dimensions")
        reply = embedding.openai_reply(body["model"], texts, dimensions)
        reply["usage"]["cost"] = DEFAULT_COST
        return _json(reply)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        script = self._take("chat")
        if script is not None and script.kind == "fail":
            return _error(script.status, script.message, script.headers)
        messages = body.get("messages") or []
        model = body.get("model") or "openrouter/auto"
        name = f"gen-{next(self._ids)}"
        if script is not None and script.kind == "error_in_body":
            return _json({"error": {"code": script.code, "message": script.message}})
        text = script.text if script is not None and script.text is not None else None
        planned = plan_from_openai(body) if script is None else None
        result = last_tool_result(messages)
        if text is None and result is not None:
            text = tool_result_text(result)
        if text is None:
            text = "" if planned is not None else f"Echo: {last_user_text(messages)}"
        finish = "tool_calls" if planned is not None else "stop"
        pieces = list(script.pieces) if script is not None and script.pieces else split_tokens(text)
        prompt_tokens = count_prompt_tokens(messages)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        cost = script.cost if script is not None else DEFAULT_COST
        if cost is not None:
            usage["cost"] = cost
        if not body.get("stream"):
            return _json(
                {
                    "id": name,
                    "provider": "OpenAI",
                    "model": model,
                    "object": "chat.completion",
                    "created": 1760706313,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": finish,
                            "native_finish_reason": finish,
                            "message": _message(text, planned),
                        }
                    ],
                    "usage": usage,
                }
            )
        return await self._stream(request, name, model, pieces, usage, script, planned)

    async def _stream(
        self,
        request: web.Request,
        name: str,
        model: str,
        pieces: list[str],
        usage: dict[str, Any],
        script: _Script | None,
        planned: PlannedCall | None = None,
    ) -> web.StreamResponse:
        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {
                "id": name,
                "provider": "OpenAI",
                "model": model,
                "object": "chat.completion.chunk",
                "created": 1760706313,
                "choices": choices,
                **extra,
            }
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        keep_alive = PROCESSING * (script.keep_alives if script is not None else 0)
        frames = [keep_alive]
        for piece in pieces:
            delta = {"role": "assistant", "content": piece}
            frames += [event([{"index": 0, "delta": delta, "finish_reason": None}]), keep_alive]
        for piece in openai_call_pieces(planned, 0) if planned is not None else []:
            delta = {"role": "assistant", "content": None, "tool_calls": [piece]}
            frames.append(event([{"index": 0, "delta": delta, "finish_reason": None}]))
        if script is not None and script.kind == "error_mid_stream":
            error = {"code": script.code, "message": script.message}
            choice: dict[str, Any] = {"index": 0, "delta": {"content": ""}}
            choice["finish_reason"] = "error"
            if script.in_choice:
                frames.append(event([{**choice, "error": error}]))
            else:
                frames.append(event([choice], error=error))
        else:
            finish = "tool_calls" if planned is not None else "stop"
            stop = {"index": 0, "delta": {}, "finish_reason": finish}
            frames += [event([stop]), keep_alive, event([], usage=usage), b"data: [DONE]\n\n"]
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        for frame in frames:
            if frame:
                await response.write(frame)
        await response.write_eof()
        return response


def _message(text: str, planned: PlannedCall | None) -> dict[str, Any]:
    if planned is None:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text or None, "tool_calls": [openai_call(planned)]}


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": {"code": status, "message": message}}, status, headers)
