"""A stand-in Ollama server on a real loopback socket, speaking Ollama's native API.

``OllamaStandIn`` runs an aiohttp app in a daemon thread with its own event loop. It serves
``POST /api/chat`` (NDJSON stream or one JSON object), ``POST /api/embed``, ``GET /api/tags``,
``GET /api/ps`` and ``POST /api/show``, records every request, and takes scripts, one per
request, from a FIFO::

    with OllamaStandIn(models={"llama3.2:latest": 131072}) as srv:
        srv.error_mid_stream(after_chunks=2)  # the next chat request
        ...                                   # point the wire at srv.base_url
        assert srv.chat_requests[0].json["options"] == {"num_predict": 5}

Shapes follow Ollama's docs/api.md and server/routes.go: errors are ``{"error": "..."}``
with the status, an unknown model is 404 ``model '<name>' not found``; a stream is
``application/x-ndjson``, every line ``{"model", "created_at", "message": {"role",
"content"}, "done": false}``, the last ``"done": true`` with ``done_reason`` and the counts;
an error after the 200 is an ``{"error": "..."}`` line, then the end of the stream.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import embedding
from .completion import count_prompt_tokens, last_user_text, split_tokens
from .schema_gen import example_for_schema
from .threaded import ThreadedApp
from .tool_use import PlannedCall, last_tool_result, plan_from_openai, tool_result_text

__all__ = ["OllamaStandIn", "Recorded"]

NDJSON = "application/x-ndjson"
CREATED_AT = "2025-10-26T17:15:24.097767Z"


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    json: Any  # None when there was no body or it was not JSON


@dataclass
class _Script:
    kind: str  # reply | fail | error_mid_stream | cut | hang | drop
    route: str = "/api/chat"
    text: str | None = None
    thinking: str | None = None
    done_reason: str = "stop"
    status: int = 500
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    after_chunks: int = 2
    seconds: float = 0.0
    interval: float = 0.0
    message: str = "an error was encountered while running the model"
    tool_calls: Any = None


class OllamaStandIn(ThreadedApp):
    """A scriptable Ollama on a free 127.0.0.1 port.

    Args:
        models: Downloaded models, each with its trained context length (``/api/show``'s
            ``model_info["llama.context_length"]``; None leaves it out).
        loaded: Loaded models, each with the context it was loaded with (``/api/ps``'s
            ``context_length``; None leaves it out).
    """

    def __init__(
        self,
        *,
        models: Mapping[str, int | None] | None = None,
        loaded: Mapping[str, int | None] | None = None,
    ) -> None:
        super().__init__()
        self.models = dict(models if models is not None else {"llama3.2:latest": 131072})
        self.loaded = dict(loaded if loaded is not None else {})
        self.requests: list[Recorded] = []
        self.disconnected = threading.Event()
        """Set when a client closes its connection while a stream is being sent."""
        self._scripts: deque[_Script] = deque()
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (what OLLAMA_BASE_URL would hold)."""
        return f"http://127.0.0.1:{self.port}"

    def build_app(self) -> web.Application:
        """Ollama's routes."""
        app = web.Application()
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/show", self._show)
        return app

    # ── scripting ───────────────────────────────────────────────────────────

    def reset(self) -> None:
        """Forget scripts and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
        self.disconnected.clear()

    @property
    def chat_requests(self) -> list[Recorded]:
        """The recorded ``/api/chat`` requests."""
        return [r for r in self.requests if r.path == "/api/chat"]

    @property
    def embed_requests(self) -> list[Recorded]:
        """The recorded ``/api/embed`` requests."""
        return [r for r in self.requests if r.path == "/api/embed"]

    def reply(
        self,
        text: str,
        *,
        thinking: str | None = None,
        done_reason: str = "stop",
        interval: float = 0.0,
    ) -> None:
        """Answer with this text (streamed a word a line, ``interval`` seconds apart)."""
        self._push(
            _Script(
                "reply", text=text, thinking=thinking, done_reason=done_reason, interval=interval
            )
        )

    def reply_tool_calls(self, calls: Any) -> None:
        """Answer with this `message.tool_calls` exactly as given (malformed ones, say)."""
        self._push(_Script("reply", text="", done_reason="stop", tool_calls=calls))

    def fail(
        self,
        status: int,
        body: Any = None,
        *,
        route: str = "/api/chat",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer with an HTTP error: ``body`` a str becomes ``{"error": body}``, other
        values are sent as JSON, bytes as they are."""
        self._push(_Script("fail", route, status=status, body=body, headers=headers or {}))

    def error_mid_stream(self, after_chunks: int = 2, message: str | None = None) -> None:
        """Stream this many lines, then an ``{"error": ...}`` line and the end (HTTP 200)."""
        script = _Script("error_mid_stream", after_chunks=after_chunks)
        if message is not None:
            script.message = message
        self._push(script)

    def cut(self, after_chunks: int = 2) -> None:
        """Stream this many lines, then end the response without a ``done: true`` line."""
        self._push(_Script("cut", after_chunks=after_chunks))

    def hang(self, seconds: float, *, route: str = "/api/chat") -> None:
        """Wait this long before answering (normally)."""
        self._push(_Script("hang", route, seconds=seconds))

    def drop(self, *, route: str = "/api/chat") -> None:
        """Close the connection without any reply, as a server closing an idle keep-alive
        connection while the request was on its way."""
        self._push(_Script("drop", route))

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

    # ── handlers ────────────────────────────────────────────────────────────

    async def _record(
        self, request: web.Request
    ) -> tuple[Any, _Script | None, web.Response | None]:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        with self._lock:
            self.requests.append(Recorded(request.method, request.path, body))
        script = self._take(request.path)
        if script is not None and script.kind == "hang":
            await asyncio.sleep(script.seconds)
        if script is not None and script.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return body, script, web.Response(status=500)  # never reaches the client
        if script is not None and script.kind == "fail":
            return body, script, _error_response(script)
        return body, script, None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, script, early = await self._record(request)
        if early is not None:
            return early
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _json({"error": "invalid request"}, 400)
        model = body.get("model")
        if model not in self.models:
            return _json({"error": f"model '{model}' not found"}, 404)
        if (refusal := _unreadable_tool_calls(body["messages"])) is not None:
            return _json({"error": refusal}, 400)
        text, thinking, reason = self._answer(body, script)
        planned = plan_from_openai(body) if script is None else None
        calls = [_ollama_call(planned)] if planned is not None else []
        if script is not None and script.tool_calls is not None:
            calls = script.tool_calls
        pieces = split_tokens(text) if not calls else []
        options = body.get("options")
        limit = options.get("num_predict") if isinstance(options, dict) else None
        if isinstance(limit, int) and 0 <= limit < len(pieces):
            pieces, reason = pieces[:limit], "length"
        final: dict[str, Any] = {
            "model": model,
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reason,
            "total_duration": 4883583458,
            "prompt_eval_count": count_prompt_tokens(body["messages"]),
            "eval_count": len(pieces),
        }
        if body.get("stream") is False:
            final["message"] = {"role": "assistant", "content": "".join(pieces)}
            if thinking:
                final["message"]["thinking"] = thinking
            if calls:
                final["message"]["tool_calls"] = calls
            return _json(final)
        lines = [_chunk(model, {"thinking": thinking}) for _ in [0] if thinking]
        lines += [_chunk(model, {"content": piece}) for piece in pieces]
        # Ollama streams a tool call whole, in one line of its own.
        lines += [_chunk(model, {"tool_calls": calls}) for _ in [0] if calls]
        return await self._stream(request, lines, final, script)

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        """``/api/embed``: ``embeddings`` in input order, ``prompt_eval_count`` the tokens;
        ``dimensions`` shortens the vectors."""
        body, _script, early = await self._record(request)
        if early is not None:
            return early
        texts = embedding.texts_of(body.get("input")) if isinstance(body, dict) else None
        if texts is None or not isinstance(body, dict):
            return _json({"error": "invalid input type"}, 400)
        model = body.get("model")
        if model not in self.models:
            return _json({"error": f"model '{model}' not found"}, 404)
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) else embedding.DIMENSIONS
        return _json(
            {
                "model": model,
                "embeddings": [embedding.vector_for(text, size) for text in texts],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": sum(embedding.tokens_in(text) for text in texts),
            }
        )

    def _answer(self, body: dict[str, Any], script: _Script | None) -> tuple[str, str, str]:
        if script is not None and script.kind == "reply":
            return script.text or "", script.thinking or "", script.done_reason
        if (result := last_tool_result(body["messages"])) is not None:
            return tool_result_text(result), "", "stop"
        format_ = body.get("format")
        last = last_user_text(body["messages"])
        if isinstance(format_, dict):
            return orjson.dumps(example_for_schema(format_)).decode(), "", "stop"
        if format_ == "json":
            return orjson.dumps({"echo": last}).decode(), "", "stop"
        return f"Echo: {last}", "", "stop"

    async def _stream(
        self,
        request: web.Request,
        lines: list[bytes],
        final: dict[str, Any],
        script: _Script | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        kind = script.kind if script is not None else "reply"
        interval = script.interval if script is not None else 0.0
        try:
            for index, line in enumerate(lines):
                if kind in ("error_mid_stream", "cut") and script and index >= script.after_chunks:
                    break
                if interval and index:
                    await asyncio.sleep(interval)
                await response.write(line)
            if kind == "error_mid_stream" and script is not None:
                await response.write(orjson.dumps({"error": script.message}) + b"\n")
            elif kind != "cut":
                await response.write(orjson.dumps(final) + b"\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return response

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        _, _, early = await self._record(request)
        return early or _json({"models": [_listing(name) for name in self.models]})

    async def _ps(self, request: web.Request) -> web.StreamResponse:
        _, _, early = await self._record(request)
        if early is not None:
            return early
        running = []
        for name, context in self.loaded.items():
            item = {**_listing(name), "expires_at": CREATED_AT, "size_vram": 2019393189}
            if context is not None:
                item["context_length"] = context
            running.append(item)
        return _json({"models": running})

    async def _show(self, request: web.Request) -> web.StreamResponse:
        body, _, early = await self._record(request)
        if early is not None:
            return early
        name = body.get("model") if isinstance(body, dict) else None
        if name not in self.models:
            return _json({"error": f"model '{name}' not found"}, 404)
        info: dict[str, Any] = {"general.architecture": "llama", "llama.block_count": 28}
        if (context := self.models[name]) is not None:
            info["llama.context_length"] = context
        return _json(
            {
                "details": _listing(name)["details"],
                "model_info": info,
                "capabilities": ["completion"],
            }
        )


def _listing(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": CREATED_AT,
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def _ollama_call(planned: PlannedCall) -> dict[str, Any]:
    """A tool call as Ollama sends it: arguments as an object, the call's index inside
    `function`, an id (Ollama 0.12 and later)."""
    return {
        "id": planned.id,
        "function": {"index": 0, "name": planned.name, "arguments": planned.arguments},
    }


def _unreadable_tool_calls(messages: list[Any]) -> str | None:
    """What Ollama's Go decoder says about a tool call whose arguments are not an object."""
    for message in messages:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            arguments = (call.get("function") or {}).get("arguments")
            if not isinstance(arguments, dict):
                return (
                    "json: cannot unmarshal string into Go struct field "
                    "ToolCallFunction.messages.tool_calls.function.arguments of type "
                    "api.ToolCallFunctionArguments"
                )
    return None


def _chunk(model: str, message: dict[str, Any]) -> bytes:
    line = {
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": "", **message},
        "done": False,
    }
    return orjson.dumps(line) + b"\n"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )


def _error_response(script: _Script) -> web.Response:
    body = script.body
    if isinstance(body, bytes):
        payload = body
    elif body is None or isinstance(body, str):
        payload = orjson.dumps({"error": body or "internal error"})
    else:
        payload = orjson.dumps(body)
    headers = {"Content-Type": "application/json", **script.headers}
    return web.Response(status=script.status, body=payload, headers=headers)
