"""A stand-in LM Studio / OpenAI-compatible server on a real loopback socket.

``StandInServer`` runs an aiohttp app in a daemon thread with its own event loop, so it
serves whatever loop (or none) the test itself uses. It speaks the real wire protocol
(``/v1/models``, ``/api/v0/models``, ``/v1/chat/completions`` with and without SSE) and
can be scripted to misbehave, one request at a time::

    with StandInServer() as srv:
        srv.fail(503)                    # the next chat request gets a 503
        srv.reply("hello there")         # the one after that gets this text
        ...                              # point AsyncOpenAI(base_url=srv.base_url) at it
        assert srv.chat_requests[0].json["model"] == "llama-3.2-3b-instruct"

Scripts are kept in one FIFO queue; each request takes the first script whose route
matches its own (``"chat"``, ``"embeddings"``, ``"models"`` for ``/v1/models``,
``"native_models"`` for LM Studio's own listings ``/api/v0/models`` and
``GET /api/v1/models``, ``"any"``).
Requests with no script get the default answer.

LM Studio 0.4's native REST API for model management is served too (``GET /api/v1/models``,
``POST /api/v1/models/load``, ``POST /api/v1/models/unload``); ``rest_v1=False`` plays an
older LM Studio that answers those paths with its "Unexpected endpoint" body.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import orjson
from aiohttp import web

from . import embedding, wire
from .completion import (
    DONE,
    Answer,
    Completion,
    count_prompt_tokens,
    last_user_text,
    pad,
    split_tokens,
)
from .schema_gen import example_for_schema
from .tool_use import PlannedCall, last_tool_result, plan_from_openai, tool_result_text
from .wire import ErrorStyle, LMStudioVersion

__all__ = [
    "DEFAULT_MODELS",
    "Handler",
    "InvalidKind",
    "RecordedRequest",
    "Route",
    "StandInServer",
    "unanswered_connect_url",
    "unused_url",
]

Route: TypeAlias = Literal["chat", "models", "native_models", "embeddings", "any"]
InvalidKind: TypeAlias = Literal["prose", "truncated", "fenced", "wrong_shape"]
Handler: TypeAlias = Callable[
    [web.Request, "RecordedRequest"], "Awaitable[web.StreamResponse] | web.StreamResponse"
]

DEFAULT_MODELS: tuple[str, ...] = ("llama-3.2-3b-instruct", "mistral-7b-instruct", "codellama-7b")

_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
}
_JSON = "application/json; charset=utf-8"
_BAD_JSON = object()  # marks a request body that did not parse
_CHAT_KINDS = frozenset({"reply", "stream_cut", "slow_stream", "invalid_json"})
_PROSE = "I'm sorry, but I can't provide that in JSON right now."


def unused_url(host: str = "127.0.0.1") -> str:
    """``http://HOST:PORT/v1`` for a port nothing listens on (bound, then closed)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"http://{_netloc(host, port)}/v1"


@contextlib.contextmanager
def unanswered_connect_url(host: str = "127.0.0.1") -> Iterator[str]:
    """``http://HOST:PORT/v1`` where a connection attempt hangs until it times out, as to a
    machine that is off or behind a firewall that drops packets: a listener whose accept
    queue is full (the kernel then ignores new SYNs), held while the block runs."""
    family = _family(host)
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
        listener.bind((host, 0))
        listener.listen(0)
        address = listener.getsockname()[:2]
        for _ in range(3):  # fill the queue; attempts beyond it are left waiting
            filler = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(address)
        time.sleep(0.1)
        yield f"http://{_netloc(host, address[1])}/v1"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _route_of(path: str) -> str:
    if path in ("/v1/chat/completions", "/api/v0/chat/completions"):
        return "chat"
    if path in ("/v1/embeddings", "/api/v0/embeddings"):
        return "embeddings"
    if path == "/v1/models" or path.startswith("/v1/models/"):
        return "models"
    if path in ("/api/v0/models", "/api/v1/models") or path.startswith("/api/v0/models/"):
        return "native_models"
    return "other"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    json: Any
    """The parsed JSON body; ``None`` when there was no body or it did not parse."""
    at: float
    """``time.monotonic()`` on arrival."""

    @property
    def route(self) -> str:
        """``"chat"``, ``"models"``, ``"native_models"`` or ``"other"``."""
        return _route_of(self.path)


@dataclass
class _Script:
    kind: str
    route: str
    times: int | None  # None: every matching request until reset()
    delay: float = 0.0
    content: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    status: int = 500
    body: Any = None
    content_type: str = _JSON
    headers: Mapping[str, str] | None = None
    after_chunks: int = 2
    n_chunks: int = 0
    interval: float = 0.0
    invalid: InvalidKind = "prose"
    handler: Handler | None = None
    tool_calls: list[PlannedCall] | None = None
    raw_tool_calls: Any = None


_RESETTABLE = (
    "error_style",
    "api_key",
    "json_object_supported",
    "json_schema_supported",
    "native_api",
    "jit",
    "lmstudio_version",
    "stream_chunks",
    "chunk_interval",
    "rest_v1",
    "load_delay",
)

# Per-request storage (typed aiohttp keys).
_RECORD = web.RequestKey("record", RecordedRequest)
_BAD_BODY = web.RequestKey("bad_body", bool)
_SCRIPT = web.RequestKey("script", _Script)
_CUT = web.RequestKey("cut", bool)


class StandInServer:
    """A scriptable LM Studio / OpenAI-compatible server on a free loopback port.

    Args:
        models: Model identifiers it has "downloaded" (default ``DEFAULT_MODELS``).
        loaded: Which of them are loaded (default: all).
        error_style: ``"lmstudio"`` answers errors exactly as LM Studio does (see
            ``wire``); ``"openai"`` answers like api.openai.com.
        api_key: When set, requests without ``Authorization: Bearer <api_key>`` get 401.
        json_object_supported: Accept ``response_format: {"type": "json_object"}`` (LM
            Studio rejects it with a 400; OpenAI accepts it).
        json_schema_supported: Accept ``response_format: {"type": "json_schema"}``.
        host: Loopback address to bind (``127.0.0.2`` plays a "remote" host).
        port: Port to bind; 0 picks a free one.
        native_api: Serve LM Studio's ``/api/v0/*``; when off those paths 404 like an
            OpenAI server.
        jit: LM Studio's just-in-time loading: ``/v1/models`` lists every model, and a chat
            request for an unloaded one loads it. Off (default): only loaded models are
            listed and usable.
        lmstudio_version: ``"0.3"`` or ``"0.4"``: which release's error wording and status
            codes to reproduce (see ``wire``).
        stream_chunks: When set, default text replies are exactly this many tokens long.
        chunk_interval: Seconds between streamed tokens of default replies.
        max_records: How many requests ``requests`` keeps (the newest); None keeps all.
        rest_v1: Serve LM Studio 0.4's ``/api/v1/models`` (list, load, unload).
        load_delay: Seconds ``POST /api/v1/models/load`` takes (a model loading).
    """

    def __init__(
        self,
        *,
        models: Sequence[str] | None = None,
        loaded: Iterable[str] | None = None,
        error_style: ErrorStyle = "lmstudio",
        api_key: str | None = None,
        json_object_supported: bool = False,
        json_schema_supported: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        native_api: bool = True,
        jit: bool = False,
        lmstudio_version: LMStudioVersion = "0.3",
        stream_chunks: int | None = None,
        chunk_interval: float = 0.0,
        max_records: int | None = 10_000,
        rest_v1: bool = True,
        load_delay: float = 0.0,
    ) -> None:
        if error_style not in ("lmstudio", "openai"):
            raise ValueError(f"error_style must be 'lmstudio' or 'openai', not {error_style!r}")
        self.error_style: ErrorStyle = error_style
        self.api_key = api_key
        self.json_object_supported = json_object_supported
        self.json_schema_supported = json_schema_supported
        self.host = host
        self.native_api = native_api
        self.jit = jit
        self.lmstudio_version: LMStudioVersion = lmstudio_version
        self.stream_chunks = stream_chunks
        self.chunk_interval = chunk_interval
        self.rest_v1 = rest_v1
        self.load_delay = load_delay
        # The options above are plain attributes a test may change; reset() restores them.
        self._options = {k: getattr(self, k) for k in _RESETTABLE}

        self._initial_models = list(DEFAULT_MODELS if models is None else models)
        self._initial_loaded = set(self._initial_models if loaded is None else loaded)
        self._models = list(self._initial_models)
        self._loaded = set(self._initial_loaded)
        self._instance_ids: dict[str, list[str]] = {}  # loaded instances, when not just [model]
        self.not_for_tools: set[str] = set()
        """Models the native listings report as not trained for tool use (reset() empties)."""

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._scripts: deque[_Script] = deque()
        self._records: deque[RecordedRequest] = deque(maxlen=max_records)
        self._disconnects = 0
        self.disconnect_event = threading.Event()
        """Set on the first client disconnect during a response; cleared by ``reset()``."""

        self._ids = itertools.count(1)
        self._schema_cache: dict[bytes, str] = {}
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._stopping = False
        self._aborted: set[object] = set()  # connections the server itself cut

    # ── lifecycle ───────────────────────────────────────────────────────────────────

    def start(self) -> StandInServer:
        """Bind the port and start serving in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("StandInServer already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = loop
        self._stopping = False
        self._thread = threading.Thread(
            target=self._serve, args=(loop, ready, failure), name="standin-upstream", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread.join(5)
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close every connection and the socket, and end the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._stopping = True
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (stays the same across ``refuse()``/``accept()``)."""
        return self._port

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` (LM Studio's native API lives under ``/api/v0``)."""
        return f"http://{_netloc(self.host, self._port)}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the OpenAI-compatible base URL."""
        return f"{self.root_url}/v1"

    @property
    def refusing(self) -> bool:
        """True between ``refuse()`` and ``accept()``."""
        return self._thread is not None and self._site is None

    def _serve(
        self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._astart())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._ashutdown())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _astart(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        app.router.add_get("/v1/models", self._models_list)
        app.router.add_get("/v1/models/{model:.+}", self._model_get)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/api/v0/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/api/v0/embeddings", self._embeddings)
        app.router.add_get("/api/v0/models", self._native_list)
        app.router.add_get("/api/v0/models/{model:.+}", self._native_get)
        app.router.add_get("/api/v1/models", self._rest_list)
        app.router.add_post("/api/v1/models/load", self._rest_load)
        app.router.add_post("/api/v1/models/unload", self._rest_unload)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await self._runner.setup()
        await self._bind()

    async def _bind(self) -> None:
        assert self._runner is not None
        sock = socket.socket(_family(self.host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        site = web.SockSite(self._runner, sock)
        await site.start()
        self._port = sock.getsockname()[1]
        self._site = site

    async def _ashutdown(self) -> None:
        await self._arefuse()  # cut open connections at once, like a process exit
        if self._runner is not None:
            await self._runner.cleanup()

    def _on_loop(self, make: Callable[[], Awaitable[None]]) -> None:
        """Run a coroutine on the server's loop and wait for it (from any other thread)."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("StandInServer is not running")
        if threading.current_thread() is self._thread:
            raise RuntimeError("call this from the test, not from inside a server handler")

        async def run() -> None:
            await make()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # ── scripting ───────────────────────────────────────────────────────────────────

    def _push(self, script: _Script) -> None:
        if script.times is not None and script.times < 1:
            raise ValueError("times must be >= 1 (or None for every request)")
        with self._lock:
            self._scripts.append(script)

    def reply(self, text: str, *, times: int | None = 1, delay: float = 0.0) -> None:
        """Answer with this text (finish_reason "stop", unless ``max_tokens`` cuts it)."""
        self._push(_Script("reply", "chat", times, delay, content=text))

    def reply_reasoning(
        self, reasoning: str, content: str = "", *, times: int | None = 1, delay: float = 0.0
    ) -> None:
        """Answer with ``message.reasoning_content`` (streamed as ``delta.reasoning_content``)."""
        self._push(_Script("reply", "chat", times, delay, content=content, reasoning=reasoning))

    def reply_json(self, value: Any, *, times: int | None = 1, delay: float = 0.0) -> None:
        """Answer with exactly this content: a str as is, anything else JSON-encoded."""
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        self._push(_Script("reply", "chat", times, delay, content=text))

    def reply_tool_calls(self, *calls: tuple[str, Any], times: int | None = 1) -> None:
        """Answer with these tool calls (name, arguments: an object, or a str sent as is)."""
        planned = [
            PlannedCall(f"call_scripted_{i}", name, args) for i, (name, args) in enumerate(calls)
        ]
        self._push(_Script("reply", "chat", times, tool_calls=planned))

    def reply_raw_tool_calls(self, raw: Any, *, times: int | None = 1) -> None:
        """Answer with this `message.tool_calls` exactly as given (malformed ones, say)."""
        self._push(_Script("reply", "chat", times, content="", raw_tool_calls=raw))

    def reply_truncated(self, text: str, *, times: int | None = 1, delay: float = 0.0) -> None:
        """Answer with this text and finish_reason "length"."""
        self._push(_Script("reply", "chat", times, delay, content=text, finish_reason="length"))

    def fail(
        self,
        status: int = 500,
        body: Any = None,
        *,
        times: int | None = 1,
        delay: float = 0.0,
        route: Route = "chat",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer with an HTTP error. ``body``: None for the error style's default body, a
        dict/list for JSON, str/bytes sent as is. ``headers`` e.g. ``{"Retry-After": "1"}``."""
        self._push(_Script("fail", route, times, delay, status=status, body=body, headers=headers))

    def garbage(
        self,
        times: int | None = 1,
        *,
        body: bytes = b"<html><body>502 Bad Gateway</body></html>",
        content_type: str = "application/json",
        route: Route = "chat",
        delay: float = 0.0,
    ) -> None:
        """Answer 200 with a body that is not JSON (a streaming request gets it as one SSE
        event). The Content-Type says JSON by default, as a confused proxy would."""
        self._push(_Script("garbage", route, times, delay, body=body, content_type=content_type))

    def delay(self, seconds: float, *, times: int | None = 1, route: Route = "chat") -> None:
        """Wait this long, then answer normally. Other requests are not held up."""
        self._push(_Script("delay", route, times, seconds))

    def stream_cut(
        self, after_chunks: int = 2, *, times: int | None = 1, delay: float = 0.0
    ) -> None:
        """Send this many SSE events, then abort the connection (no ``[DONE]``). A
        non-streaming request gets half of its body, then the abort."""
        self._push(_Script("stream_cut", "chat", times, delay, after_chunks=after_chunks))

    def slow_stream(
        self,
        n_chunks: int = 50,
        interval: float = 0.05,
        *,
        times: int | None = 1,
        delay: float = 0.0,
    ) -> None:
        """Stream an ``n_chunks``-token reply, one token every ``interval`` seconds, the
        first after ``delay`` seconds (a model reading the prompt)."""
        self._push(
            _Script("slow_stream", "chat", times, delay, n_chunks=n_chunks, interval=interval)
        )

    def invalid_json(
        self, times: int | None = 1, *, kind: InvalidKind = "prose", delay: float = 0.0
    ) -> None:
        """Answer a structured-output request with content that fails its schema:
        ``"prose"`` (not JSON), ``"truncated"`` (valid JSON cut in half), ``"fenced"``
        (valid JSON inside a Markdown code fence), ``"wrong_shape"`` (JSON of the wrong type).
        """
        self._push(_Script("invalid_json", "chat", times, delay, invalid=kind))

    def enqueue(self, handler: Handler, *, route: Route = "chat", times: int | None = 1) -> None:
        """Escape hatch: ``handler(request, record)`` answers the request. It runs on the
        server's own loop and may be async; it returns an aiohttp response."""
        self._push(_Script("custom", route, times, handler=handler))

    def no_models_loaded(self) -> None:
        """Unload every model (chat requests then get LM Studio's "No models loaded")."""
        with self._lock:
            self._loaded.clear()
            self._instance_ids.clear()

    def set_models(self, models: Sequence[str], loaded: Iterable[str] | None = None) -> None:
        """Replace the downloaded models (and which are loaded; default all)."""
        with self._lock:
            self._models = list(models)
            self._loaded = set(self._models if loaded is None else loaded)
            self._instance_ids.clear()

    def set_loaded(self, loaded: Iterable[str]) -> None:
        """Choose which downloaded models are loaded."""
        with self._lock:
            self._loaded = set(loaded)
            self._instance_ids.clear()

    def refuse(self) -> None:
        """Close the listening socket and every open connection: connects are refused."""
        self._on_loop(self._arefuse)

    def accept(self) -> None:
        """Listen again, on the same port."""
        self._on_loop(self._aaccept)

    async def _arefuse(self) -> None:
        site, self._site = self._site, None
        if site is None:
            return
        await site.stop()
        server = self._runner.server if self._runner else None
        for conn in server.connections if server else []:
            self._aborted.add(conn)
            if conn.transport is not None:
                conn.transport.abort()

    async def _aaccept(self) -> None:
        if self._site is None:
            await self._bind()

    def reset(self) -> None:
        """Forget scripts, records and disconnects; restore the models and the constructor's
        options (``api_key``, ``error_style``, ...); listen again if refusing."""
        with self._lock:
            for name, value in self._options.items():
                setattr(self, name, value)
            self._scripts.clear()
            self._records.clear()
            self._disconnects = 0
            self._models = list(self._initial_models)
            self._loaded = set(self._initial_loaded)
            self._instance_ids.clear()
            self._aborted.clear()
            self.not_for_tools.clear()
        self.disconnect_event.clear()
        if self.refusing:
            self.accept()

    @property
    def scripts_pending(self) -> int:
        """How many scripted answers have not been used up yet."""
        with self._lock:
            return sum(1 for s in self._scripts if s.times is not None)

    # ── observing ───────────────────────────────────────────────────────────────────

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received (auth failures included), in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completion requests, in arrival order."""
        return [r for r in self.requests if r.route == "chat"]

    @property
    def embeddings_requests(self) -> list[RecordedRequest]:
        """The embeddings requests received so far."""
        return [r for r in self.requests if r.route == "embeddings"]

    @property
    def disconnects(self) -> int:
        """How many clients hung up while a response was still being produced."""
        with self._lock:
            return self._disconnects

    def wait_for_disconnect(self, timeout: float = 1.0, count: int = 1) -> bool:
        """Block until ``disconnects >= count``; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._disconnects >= count, timeout)

    async def wait_for_disconnect_async(
        self,
        timeout: float = 1.0,  # noqa: ASYNC109 -- mirrors the sync method
        count: int = 1,
    ) -> bool:
        """Like ``wait_for_disconnect`` but without blocking the caller's event loop."""
        return await self._poll(lambda: self._disconnects >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 1.0, route: str = "chat") -> bool:
        """Block until ``count`` requests on ``route`` (or ``"any"``) have arrived."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count(route) >= count, timeout)

    async def wait_for_requests_async(
        self,
        count: int,
        timeout: float = 1.0,  # noqa: ASYNC109 -- mirrors the sync method
        route: str = "chat",
    ) -> bool:
        """Like ``wait_for_requests`` but without blocking the caller's event loop."""
        return await self._poll(lambda: self._count(route) >= count, timeout)

    def _count(self, route: str) -> int:
        return sum(1 for r in self._records if route == "any" or r.route == route)

    async def _poll(self, done: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            with self._lock:
                if done():
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)

    def _note_disconnect(self, request: web.BaseRequest) -> None:
        if self._stopping or request.get(_CUT) or request.protocol in self._aborted:
            return
        with self._changed:
            self._disconnects += 1
            self._changed.notify_all()
        self.disconnect_event.set()

    # ── request pipeline ────────────────────────────────────────────────────────────

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.read() if request.body_exists else b""
        parsed: Any = None
        if raw:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = _BAD_JSON
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=raw,
            json=None if parsed is _BAD_JSON else parsed,
            at=time.monotonic(),
        )
        route = record.route
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()
        request[_RECORD] = record
        request[_BAD_BODY] = parsed is _BAD_JSON
        try:
            denied = self._check_auth(request.headers.get("Authorization"))
            if denied is not None:
                return denied
            script = self._take(route)
            if script is not None:
                if script.delay > 0:
                    await asyncio.sleep(script.delay)
                if script.kind == "fail":
                    return self._fail_response(script)
                if script.kind == "garbage":
                    return await self._garbage_response(request, script)
                if script.kind == "custom":
                    assert script.handler is not None
                    result = script.handler(request, record)
                    return await result if isinstance(result, Awaitable) else result
                if script.kind in _CHAT_KINDS:
                    request[_SCRIPT] = script
            return await handler(request)
        except asyncio.CancelledError:
            self._note_disconnect(request)
            raise

    def _give_back(self, script: _Script | None) -> None:
        """Return an answer script to the front of the queue: a request rejected before
        it reached the model (unknown model, unsupported response_format) answers nothing,
        so the next request gets the script, as it would from a real server."""
        if script is None or script.times is None:
            return
        with self._lock:
            if script in self._scripts:
                script.times += 1
            else:
                script.times = 1
                self._scripts.appendleft(script)

    def _take(self, route: str) -> _Script | None:
        with self._lock:
            for script in self._scripts:
                if script.route == route or script.route == "any":
                    if script.times is not None:
                        script.times -= 1
                        if script.times == 0:
                            self._scripts.remove(script)
                    return script
        return None

    def _check_auth(self, header: str | None) -> web.Response | None:
        if self.api_key is None:
            return None
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token == self.api_key:
            return None
        if self.error_style == "lmstudio":
            message = (
                wire.LMSTUDIO_TOKEN_MALFORMED.format(prefix=token[:10])
                if token
                else wire.LMSTUDIO_TOKEN_REQUIRED
            )
            return _json_response(wire.lmstudio_auth_error(message), 401)
        if token:
            body = wire.openai_error(
                wire.OPENAI_INCORRECT_KEY.format(masked=wire.mask_key(token)),
                code="invalid_api_key",
            )
        else:
            body = wire.openai_error(wire.OPENAI_MISSING_KEY)
        return _json_response(body, 401)

    def _fail_response(self, script: _Script) -> web.Response:
        body = script.body
        if body is None:
            body = wire.failure_body(self.error_style, script.status)
        if isinstance(body, bytes | str):
            data = body.encode() if isinstance(body, str) else body
            return web.Response(status=script.status, body=data, headers=_typed(script, _JSON))
        return web.Response(
            status=script.status, body=orjson.dumps(body), headers=_typed(script, _JSON)
        )

    async def _garbage_response(self, request: web.Request, script: _Script) -> web.StreamResponse:
        record = request[_RECORD]
        data = script.body if isinstance(script.body, bytes) else str(script.body).encode()
        wants_stream = isinstance(record.json, dict) and bool(record.json.get("stream"))
        if not wants_stream:
            return web.Response(body=data, headers={"Content-Type": script.content_type})
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        await resp.write(b"data: " + data + b"\n\n" + DONE)
        return resp

    # ── models ──────────────────────────────────────────────────────────────────────

    def _model_state(self) -> tuple[list[str], list[str]]:
        with self._lock:
            models = list(self._models)
            loaded = [m for m in models if m in self._loaded]
        return models, loaded

    def _listed(self) -> list[str]:
        models, loaded = self._model_state()
        return models if (self.jit and self.error_style == "lmstudio") else loaded

    async def _models_list(self, request: web.Request) -> web.StreamResponse:
        if self.error_style == "openai":
            data = [_openai_model(m) for m in self._listed()]
            return _json_response({"object": "list", "data": data})
        entries = [
            {"id": m, "object": "model", "owned_by": wire.LMSTUDIO_OWNED_BY} for m in self._listed()
        ]
        return _json_response({"data": entries, "object": "list"})

    async def _model_get(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if model not in self._listed():
            return self._model_not_found(model)
        if self.error_style == "openai":
            return _json_response(_openai_model(model))
        return _json_response({"id": model, "object": "model", "owned_by": wire.LMSTUDIO_OWNED_BY})

    async def _native_list(self, request: web.Request) -> web.StreamResponse:
        if not self.native_api:
            return await self._openai_404(request)
        models, loaded = self._model_state()
        data = [self._native_entry(m, m in loaded) for m in models]
        return _json_response({"object": "list", "data": data})

    async def _native_get(self, request: web.Request) -> web.StreamResponse:
        if not self.native_api:
            return await self._openai_404(request)
        model = request.match_info["model"]
        models, loaded = self._model_state()
        if model not in models:
            return _json_response(
                wire.string_error(wire.STANDIN_NATIVE_MODEL_NOT_FOUND.format(model=model)), 404
            )
        return _json_response(self._native_entry(model, model in loaded))

    # ── LM Studio 0.4's REST API v1: list, load, unload ───────────────────────────────
    # Shapes from https://lmstudio.ai/docs/developer/rest/{list,load,unload}.

    def _native_entry(self, model: str, loaded: bool) -> dict[str, Any]:
        """REST API v0's entry; `capabilities` lists "tool_use" for a model trained for it."""
        entry = wire.native_model_entry(model, loaded)
        trained = model not in self.not_for_tools and entry["type"] != "embeddings"
        entry["capabilities"] = ["tool_use"] if trained else []
        return entry

    def _instances(self, model: str) -> list[str]:
        with self._lock:
            if model not in self._loaded:
                return []
            return list(self._instance_ids.get(model, [model]))

    async def _rest_list(self, request: web.Request) -> web.StreamResponse:
        if not self.rest_v1 or self.error_style == "openai":
            return await self._unknown(request)
        models, _ = self._model_state()
        entries = []
        for model in models:
            native = wire.native_model_entry(model, False)
            instances = [
                {"id": iid, "config": {"context_length": 4096}} for iid in self._instances(model)
            ]
            entries.append(
                {
                    "type": "embedding" if native["type"] == "embeddings" else "llm",
                    "publisher": native["publisher"],
                    "key": model,
                    "display_name": model,
                    "quantization": {"name": native["quantization"], "bits_per_weight": 4},
                    "loaded_instances": instances,
                    "max_context_length": native["max_context_length"],
                    "format": "gguf",
                    "capabilities": {
                        "vision": native["type"] == "vlm",
                        "trained_for_tool_use": model not in self.not_for_tools
                        and native["type"] != "embeddings",
                    },
                }
            )
        return _json_response({"models": entries})

    async def _rest_load(self, request: web.Request) -> web.StreamResponse:
        if not self.rest_v1 or self.error_style == "openai":
            return await self._unknown(request)
        body = request[_RECORD].json
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or model not in self._model_state()[0]:
            message = wire.STANDIN_NATIVE_MODEL_NOT_FOUND.format(model=model)
            return _json_response(wire.openai_error(message, param="model"), 404)
        if self.load_delay:
            await asyncio.sleep(self.load_delay)
        ids = self._instances(model)  # loaded already: LM Studio loads another instance
        instance = f"{model}:{len(ids) + 1}" if ids else model
        with self._lock:
            self._loaded.add(model)
            self._instance_ids[model] = [*ids, instance]
        return _json_response(
            {
                "type": "llm",
                "instance_id": instance,
                "load_time_seconds": self.load_delay,
                "status": "loaded",
            }
        )

    async def _rest_unload(self, request: web.Request) -> web.StreamResponse:
        if not self.rest_v1 or self.error_style == "openai":
            return await self._unknown(request)
        body = request[_RECORD].json
        instance = body.get("instance_id") if isinstance(body, dict) else None
        with self._lock:
            owner = next(
                (m for m in self._loaded if instance in self._instance_ids.get(m, [m])), None
            )
            if owner is None:
                message = f"No loaded model instance with identifier '{instance}'"
                return _json_response(wire.openai_error(message, param="instance_id"), 404)
            left = [i for i in self._instance_ids.get(owner, [owner]) if i != instance]
            self._instance_ids[owner] = left
            if not left:
                self._loaded.discard(owner)
                del self._instance_ids[owner]
        return _json_response({"instance_id": instance})

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        if self.error_style == "openai" or (
            not self.native_api and request.path.startswith("/api/")
        ):
            return await self._openai_404(request)
        message = wire.LMSTUDIO_UNEXPECTED_ENDPOINT.format(method=request.method, path=request.path)
        return _json_response(wire.string_error(message), 200)

    async def _openai_404(self, request: web.Request) -> web.StreamResponse:
        message = wire.OPENAI_INVALID_URL.format(method=request.method, path=request.path)
        return _json_response(wire.openai_error(message), 404)

    def _model_not_found(self, model: str) -> web.Response:
        if self.error_style == "openai":
            message = wire.OPENAI_MODEL_NOT_FOUND.format(model=model)
            return _json_response(
                status=404, body=wire.openai_error(message, code="model_not_found")
            )
        known = self._listed()
        if self.lmstudio_version == "0.4":
            message = wire.LMSTUDIO_INVALID_MODEL_IDENTIFIER.format(
                model=model, examples=", ".join(known[:3])
            )
            status = 400
        else:
            message = wire.LMSTUDIO_MODEL_NOT_FOUND.format(model=model, models="\n".join(known))
            status = 404
        return _json_response(
            status=status, body=wire.openai_error(message, param="model", code="model_not_found")
        )

    def _no_models_loaded(self) -> web.Response:
        if self.lmstudio_version == "0.4":
            body = wire.openai_error(wire.LMSTUDIO_NO_MODELS_LOADED_V04, param="model")
            return _json_response(status=400, body=body)
        body = wire.openai_error(
            wire.LMSTUDIO_NO_MODELS_LOADED, param="model", code="model_not_found"
        )
        return _json_response(status=404, body=body)

    def _resolve_model(self, requested: Any) -> str | web.Response:
        """The model that answers, or the error LM Studio / OpenAI would send."""
        name = requested if isinstance(requested, str) else ""
        if self.error_style == "openai":
            if not name:
                return _json_response(status=400, body=wire.openai_error(wire.OPENAI_MISSING_MODEL))
            return name if name in self._model_state()[1] else self._model_not_found(name)
        with self._lock:
            if self.jit and name in self._models:
                self._loaded.add(name)
        models, loaded = self._model_state()
        if not loaded and not (self.jit and models):
            return self._no_models_loaded()
        if not name:
            return loaded[0] if loaded else self._no_models_loaded()
        return name if name in loaded else self._model_not_found(name)

    # ── embeddings ──────────────────────────────────────────────────────────────────

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's embeddings wire. An OpenAI-style stand-in honours `dimensions`; an LM
        Studio one answers with the model's own size whatever is asked."""
        body = request[_RECORD].json
        if request[_BAD_BODY] or not isinstance(body, dict):
            return self._bad_request(wire.OPENAI_BAD_JSON, wire.STANDIN_BAD_JSON)
        texts = embedding.texts_of(body.get("input"))
        if texts is None:
            message = "'$.input' is invalid. Please check the API reference."
            return self._bad_request(message, message)
        model = self._resolve_model(body.get("model"))
        if isinstance(model, web.Response):
            return model
        dimensions = body.get("dimensions") if self.error_style == "openai" else None
        size = dimensions if isinstance(dimensions, int) and dimensions > 0 else None
        return _json_response(embedding.openai_reply(model, texts, size))

    # ── chat completions ────────────────────────────────────────────────────────────

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        record = request[_RECORD]
        script = request.get(_SCRIPT)
        body = record.json
        if request[_BAD_BODY] or not isinstance(body, dict):
            return self._bad_request(wire.OPENAI_BAD_JSON, wire.STANDIN_BAD_JSON)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._bad_request(wire.STANDIN_MISSING_MESSAGES, wire.STANDIN_MISSING_MESSAGES)
        model = self._resolve_model(body.get("model"))
        if isinstance(model, web.Response):
            self._give_back(script)
            return model
        fmt = self._response_format(body.get("response_format"))
        if isinstance(fmt, web.Response):
            self._give_back(script)
            return fmt
        try:
            answer = self._answer(body, messages, fmt, script)
        except ValueError as exc:  # a schema the generator cannot satisfy
            return _json_response(
                status=500, body=wire.string_error(f"stand-in cannot answer: {exc}")
            )
        native = request.path.startswith("/api/v0/")
        reply = Completion(
            next(self._ids), model, lmstudio=self.error_style == "lmstudio", native=native
        )
        interval = self.chunk_interval
        cut: int | None = None
        if script is not None and script.kind == "slow_stream":
            interval = script.interval
        if script is not None and script.kind == "stream_cut":
            cut = script.after_chunks
        if not body.get("stream"):
            if interval and answer.content:
                await asyncio.sleep(interval * len(answer.content))
            payload = reply.body(answer)
            if script is not None and script.raw_tool_calls is not None:
                payload = _with_raw_calls(payload, script.raw_tool_calls)
            if cut is not None:
                return await self._cut_body(request, payload)
            return web.Response(body=payload, headers={"Content-Type": _JSON})
        options = body.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        frames = reply.frames(answer, usage)
        if script is not None and script.raw_tool_calls is not None:
            frames = _raw_call_frames(reply, script.raw_tool_calls)
        return await self._stream(request, frames, interval, cut)

    def _bad_request(self, openai_message: str, lmstudio_message: str) -> web.Response:
        if self.error_style == "openai":
            return _json_response(status=400, body=wire.openai_error(openai_message))
        return _json_response(status=400, body=wire.string_error(lmstudio_message))

    def _response_format(self, value: Any) -> tuple[str, Any] | web.Response:
        """``(kind, schema)`` for a supported response_format, else the 400 to send."""
        if value is None:
            return ("text", None)
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "text":
            return ("text", None)
        if kind == "json_schema" and self.json_schema_supported:
            spec = value.get("json_schema")
            schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
            return ("json_schema", schema)
        if kind == "json_object" and self.json_object_supported:
            return ("json_object", None)
        if kind == "json_schema":
            message = wire.STANDIN_JSON_SCHEMA_UNSUPPORTED
        else:
            message = wire.LMSTUDIO_RESPONSE_FORMAT_ERROR
        if self.error_style == "openai":
            return _json_response(
                status=400, body=wire.openai_error(message, param="response_format")
            )
        return _json_response(status=400, body=wire.string_error(message))

    def _answer(
        self,
        body: Mapping[str, Any],
        messages: Sequence[Any],
        fmt: tuple[str, Any],
        script: _Script | None,
    ) -> Answer:
        kind, schema = fmt
        reasoning = ""
        forced: str | None = None
        calls = self._tool_calls(body, script)
        if calls:
            return Answer([], [], "tool_calls", count_prompt_tokens(messages), calls)
        result = last_tool_result(messages)
        if script is None and result is not None:
            content = tool_result_text(result)
            return Answer(split_tokens(content), [], "stop", count_prompt_tokens(messages))
        if script is not None and script.kind == "reply":
            content = script.content or ""
            reasoning = script.reasoning or ""
            forced = script.finish_reason
        elif script is not None and script.kind == "invalid_json":
            content = self._invalid_content(schema, script.invalid)
        else:
            content = self._default_content(kind, schema, last_user_text(messages))
        pieces = split_tokens(content)
        if kind == "text" and not (script and script.kind == "reply"):
            wanted = script.n_chunks if script and script.kind == "slow_stream" else None
            wanted = wanted or self.stream_chunks
            if wanted:
                pieces = pad(pieces, wanted)
        thoughts = split_tokens(reasoning)
        finish = forced or "stop"
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        budget = limit if isinstance(limit, int) and not isinstance(limit, bool) else -1
        if 0 <= budget < len(thoughts) + len(pieces):
            thoughts, pieces = thoughts[:budget], pieces[: max(0, budget - len(thoughts))]
            finish = "length"
        return Answer(pieces, thoughts, finish, count_prompt_tokens(messages))

    def _tool_calls(self, body: Mapping[str, Any], script: _Script | None) -> list[PlannedCall]:
        """The tool calls to answer with: the script's, else the stand-in model's rule."""
        if script is not None:
            return list(script.tool_calls or []) if script.kind == "reply" else []
        planned = plan_from_openai(body)
        return [planned] if planned is not None else []

    def _default_content(self, kind: str, schema: Any, last_user: str) -> str:
        if kind == "json_schema":
            return self._schema_reply(schema)
        if kind == "json_object":
            return json.dumps({"echo": last_user}, ensure_ascii=False)
        return f"Echo: {last_user}"

    def _schema_reply(self, schema: Any) -> str:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        cached = self._schema_cache.get(key)
        if cached is None:
            cached = json.dumps(example_for_schema(schema), ensure_ascii=False)
            if len(self._schema_cache) < 512:
                self._schema_cache[key] = cached
        return cached

    def _invalid_content(self, schema: Any, kind: InvalidKind) -> str:
        valid = self._schema_reply(schema if schema is not None else {"type": "object"})
        if kind == "truncated":
            return valid[: max(1, len(valid) // 2)]
        if kind == "fenced":
            return f"```json\n{valid}\n```"
        if kind == "wrong_shape":
            is_object = isinstance(json.loads(valid), dict)
            return '["unexpected", "shape"]' if is_object else '{"unexpected": "shape"}'
        return _PROSE

    async def _stream(
        self,
        request: web.Request,
        frames: Iterable[tuple[bytes, bool]],
        interval: float,
        cut: int | None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        sent = 0
        tokens_sent = False
        try:
            if not interval and cut is None:  # the fast path: one write
                await resp.write(b"".join(frame for frame, _ in frames))
                frames = ()
            for frame, is_token in frames:
                if cut is not None and (sent >= cut or frame is DONE):  # never send [DONE]
                    self._abort(request)
                    return resp
                if is_token and interval and tokens_sent:
                    await asyncio.sleep(interval)
                tokens_sent = tokens_sent or is_token
                await resp.write(frame)
                sent += 1
            await resp.write_eof()
        except ConnectionResetError:
            self._note_disconnect(request)
        return resp

    async def _cut_body(self, request: web.Request, payload: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": _JSON})
        resp.content_length = len(payload)
        await resp.prepare(request)
        await resp.write(payload[: len(payload) // 2])
        self._abort(request)
        return resp

    def _abort(self, request: web.Request) -> None:
        request[_CUT] = True
        if request.transport is not None:
            request.transport.abort()


# ── helpers ──────────────────────────────────────────────────────────────────────────


def _with_raw_calls(payload: bytes, raw: Any) -> bytes:
    body = orjson.loads(payload)
    body["choices"][0]["message"]["tool_calls"] = raw
    body["choices"][0]["finish_reason"] = "tool_calls"
    return orjson.dumps(body)


def _raw_call_frames(reply: Completion, raw: Any) -> Iterator[tuple[bytes, bool]]:
    head = {"id": reply.id, "object": "chat.completion.chunk", "created": reply.created}
    delta = {"index": 0, "delta": {"tool_calls": raw}, "finish_reason": None}
    yield b"data: " + orjson.dumps({**head, "choices": [delta]}) + b"\n\n", True
    finish = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    yield b"data: " + orjson.dumps({**head, "choices": [finish]}) + b"\n\n", False
    yield DONE, False


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), headers={"Content-Type": _JSON})


def _typed(script: _Script, content_type: str) -> dict[str, str]:
    headers = {"Content-Type": content_type}
    headers.update(script.headers or {})
    return headers


def _openai_model(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 1686935002, "owned_by": wire.OPENAI_OWNED_BY}
