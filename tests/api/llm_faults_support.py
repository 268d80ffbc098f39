"""Shared by the fault tests of /api/v1/llm and of the /v1 facade: the upstream faults, SSE
and Prometheus parsing, and a guard that no response is a 500 or leaks a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LLMEnv
from tests.upstream import StandInServer, unused_url

MODEL = "llama-3.2-3b-instruct"
UNKNOWN_MODEL = "no-such-model"
Headers = dict[str, str]

# ── upstream faults ─────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Upstreams:
    """What a fault may rearrange: the env settings and the stand-in servers."""

    env: LLMEnv
    default: StandInServer  # LM Studio 0.3 wording (the session's stand-in)
    v04: StandInServer  # LM Studio 0.4 wording


@dataclass(frozen=True)
class Fault:
    """One way the upstream fails before any text was produced, and what every endpoint must
    answer: this status, this error type, a message starting with `message` (`{url}` and
    `{model}` filled in; `stream_message` where a stream words it differently).

    A stream answers `stream_status` where it differs: 200 when the upstream said 200 before
    failing, for the relay has then sent its headers and the error is an event in the
    stream (see app/api/streaming.py)."""

    id: str
    arrange: Callable[[Upstreams], str]  # sets the fault up; returns the upstream's URL
    status: int
    kind: str
    message: str
    stream_message: str | None = None
    stream_status: int | None = None  # the status a stream answers, where not `status`
    model: str = MODEL  # the model the request asks for
    upstream_calls: int = 1  # chat requests the upstream must have seen
    retry_after: str | None = None  # the Retry-After header the error must carry

    def status_for(self, stream: bool) -> int:
        """The HTTP status a plain (`stream` false) or streaming request answers."""
        return self.stream_status if stream and self.stream_status is not None else self.status

    def in_stream(self, stream: bool) -> bool:
        """Whether the error is an event inside a stream that began with 200."""
        return stream and self.status_for(stream) == 200

    def expected_message(self, url: str, stream: bool, *, admin: bool = True) -> str:
        """What the caller is told: an admin sees the upstream's address, others do not; an
        in-stream error never does (the relay does not know who is listening)."""
        text = self.stream_message if stream and self.stream_message else self.message
        if not admin or self.in_stream(stream):
            text = without_address(text)
        return text.format(url=url, model=self.model)


def without_address(text: str) -> str:
    """A message template as a user who is not an admin sees it: no upstream address."""
    return text.replace(" at {url}", "")


def _refused(up: Upstreams) -> str:
    url = unused_url()
    up.env.set(lmstudio_model=MODEL, lmstudio_base_url=url, lmstudio_max_retries=0)
    return url


def _timeout(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_timeout=1, lmstudio_max_retries=0)
    up.default.delay(3)
    return up.default.base_url


def _server_errors(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=2)
    up.default.fail(500, times=3)
    return up.default.base_url


def _rate_limited(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    up.default.fail(429, headers={"Retry-After": "7"})
    return up.default.base_url


def _credentials_rejected(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    up.default.api_key = "the-real-token"  # we send none (LMSTUDIO_API_KEY unset)
    return up.default.base_url


def _garbage(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    up.default.garbage()
    return up.default.base_url


def _cut(up: Upstreams) -> str:
    # A stream is cut before its first event; a plain reply after half of its body. Both
    # attempts are: the retry comes before the error, in a stream too.
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=1)
    up.default.stream_cut(after_chunks=0, times=2)
    return up.default.base_url


def _no_models(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    up.default.no_models_loaded()
    return up.default.base_url


def _no_models_v04(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0, lmstudio_base_url=up.v04.base_url)
    up.v04.no_models_loaded()
    return up.v04.base_url


def _unknown_model(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    return up.default.base_url


def _unknown_model_v04(up: Upstreams) -> str:
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0, lmstudio_base_url=up.v04.base_url)
    return up.v04.base_url


NO_MODELS = "LM Studio at {url} has no model loaded: load a model in LM Studio"
NOT_AVAILABLE = "Model '{model}' is not available on LM Studio at {url} ("

FAULTS = [
    Fault(
        "refused",
        _refused,
        503,
        "llm_connection_error",
        "Cannot connect to LM Studio at {url}: is LM Studio's server running?",
        upstream_calls=0,
    ),
    Fault(
        "timeout",
        _timeout,
        504,
        "llm_timeout_error",
        "LM Studio at {url} did not answer within 1 s (model {model}).",
    ),
    Fault(
        "5xx_beyond_retries",
        _server_errors,
        502,
        "llm_upstream_error",
        "LM Studio at {url} answered HTTP 500: Stand-in scripted failure (HTTP 500)",
        upstream_calls=3,
    ),
    Fault(
        "429_beyond_retries",
        _rate_limited,
        503,
        "llm_rate_limit_error",
        "LM Studio at {url} is rate limiting requests (HTTP 429: Stand-in scripted failure",
        retry_after="7",
    ),
    Fault(
        "credentials_rejected",
        _credentials_rejected,
        502,
        "llm_authentication_error",
        "LM Studio at {url} rejected the credentials (HTTP 401): set LMSTUDIO_API_KEY to a "
        "valid key",
    ),
    Fault(
        "garbage",
        _garbage,
        502,
        "llm_upstream_error",
        "LM Studio at {url} returned a reply that is not valid JSON (model {model})",
        stream_message="The stream from LM Studio at {url} broke off after 0 chunks "
        "(JSONDecodeError)",
        stream_status=200,  # the upstream said 200, then sent garbage
    ),
    Fault(
        "cut",
        _cut,
        502,
        "llm_upstream_error",
        "LM Studio at {url} closed the connection before its reply was complete (model {model})",
        stream_message="The stream from LM Studio at {url} broke off after 0 chunks (",
        stream_status=200,  # the upstream said 200, then cut the stream
        upstream_calls=2,
    ),
    Fault("no_models", _no_models, 503, "llm_no_models_error", NO_MODELS),
    Fault("no_models_lmstudio_0.4", _no_models_v04, 503, "llm_no_models_error", NO_MODELS),
    Fault(
        "unknown_model",
        _unknown_model,
        404,
        "llm_model_not_found",
        NOT_AVAILABLE + 'Model "{model}" not found.',
        model=UNKNOWN_MODEL,
    ),
    Fault(
        "unknown_model_lmstudio_0.4",
        _unknown_model_v04,
        404,
        "llm_model_not_found",
        NOT_AVAILABLE + 'Invalid model identifier "{model}".',
        model=UNKNOWN_MODEL,
    ),
]


def chat_calls(up: Upstreams) -> int:
    """Chat requests both stand-ins received."""
    return len(up.default.chat_requests) + len(up.v04.chat_requests)


# ── faults after the first text (custom upstream answers) ───────────────────


def _frame(content: str | None, finish_reason: str | None = None) -> bytes:
    delta = {"role": "assistant", "content": content} if content is not None else {}
    chunk = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def sse_handler(*parts: bytes) -> Callable[..., Any]:
    """A stand-in answer that streams exactly `parts`, then ends cleanly."""

    async def handler(request: web.Request, _record: object) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for part in parts:
            await response.write(part)
        await response.write_eof()
        return response

    return handler


def text_then_garbage() -> Callable[..., Any]:
    """One piece of text, then an event that is not JSON."""
    return sse_handler(_frame("Hello"), b"data: <html>502 Bad Gateway</html>\n\n")


def text_then_end_without_finish() -> Callable[..., Any]:
    """Two pieces of text, then `[DONE]` with no finish_reason ever sent."""
    return sse_handler(_frame("Hello"), _frame(" there"), b"data: [DONE]\n\n")


# Faults after the first text reached the client, for every streaming endpoint: the text
# relayed before the fault, and the start of the in-stream error message (which never
# names the upstream's address: the relay does not know who is listening).
AFTER_TEXT = [
    pytest.param(
        lambda up: up.stream_cut(after_chunks=2),
        "Echo: one",
        "The stream from LM Studio broke off after 2 chunks (",
        id="cut",
    ),
    pytest.param(
        lambda up: up.enqueue(text_then_garbage()),
        "Hello",
        "The stream from LM Studio broke off after 1 chunks (JSONDecodeError)",
        id="garbage",
    ),
    pytest.param(
        lambda up: up.enqueue(text_then_end_without_finish()),
        "Hello there",
        "The stream from LM Studio ended before the reply was complete (after 2 chunks)",
        id="ended_without_finish",
    ),
]


# ── SSE ─────────────────────────────────────────────────────────────────────


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event name, parsed data) for each event; "message" where no name was sent."""
    assert "Traceback" not in text
    events: list[tuple[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data += line.removeprefix("data:").strip()
        if data:
            events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


# ── Prometheus ──────────────────────────────────────────────────────────────

Sample = tuple[str, frozenset[tuple[str, str]]]


async def scrape(client: httpx.AsyncClient) -> dict[Sample, float]:
    """Every sample of /metrics by (name, labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """The sample's value; 0 when it was never observed."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def wait_streams_idle(client: httpx.AsyncClient, timeout: float = 2.0) -> None:  # noqa: ASYNC109
    """Until no stream is relayed any more (one may still be closing from a previous test)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(client)
        if value(samples, "llm_streams_in_flight", provider="lmstudio") == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, "a stream is still in flight"
        await asyncio.sleep(0.02)


# ── no 500s, no tracebacks ──────────────────────────────────────────────────


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class ServerGuard:
    """Every response the shared client received, and the server's error log."""

    responses: list[httpx.Response] = field(default_factory=list)
    errors: list[logging.LogRecord] = field(default_factory=list)

    def check(self) -> None:
        for response in self.responses:
            assert response.status_code != 500, f"{response.request.url}: 500"
            try:
                text = response.text
            except httpx.ResponseNotRead:
                continue  # a stream read line by line: checked where it is parsed
            assert "Traceback" not in text, text
        messages = [r.getMessage() for r in self.errors]
        assert not messages, f"the server logged errors: {messages}"


@contextmanager
def server_guard(client: httpx.AsyncClient) -> Iterator[ServerGuard]:
    """Record responses of `client` and errors the app or uvicorn logs; fail on a 500, a
    traceback in a body, or any logged error (an exception that escaped a handler)."""
    guard = ServerGuard()

    async def record(response: httpx.Response) -> None:
        guard.responses.append(response)

    hooks = client.event_hooks
    client.event_hooks = {**hooks, "response": [*hooks.get("response", []), record]}
    collect = _Collect()
    loggers = [logging.getLogger(name) for name in ("app", "uvicorn.error", "sse_starlette")]
    for logger in loggers:
        logger.addHandler(collect)
    try:
        yield guard
    finally:
        client.event_hooks = hooks
        for logger in loggers:
            logger.removeHandler(collect)
    guard.errors = collect.records
    guard.check()
