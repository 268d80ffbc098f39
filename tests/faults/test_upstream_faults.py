"""Upstream faults over the real stack, each checked for what it leaves behind.

tests/api already checks every fault's status and wording (test_llm_faults.py,
test_openai_compat_faults.py). This tier adds the faults they lack (a 200 of the wrong shape,
an SSE line over 1 MB, a slow drip) and, for every fault, three properties: the answer comes
in bounded time; no asyncio task, database connection or upstream connection is left behind
(counted before and after); and the next request is served normally.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.api.llm_faults_support import (
    AFTER_TEXT,
    FAULTS,
    MODEL,
    Fault,
    Headers,
    Upstreams,
    sse_events,
    wait_streams_idle,
)
from tests.faults.leaks import Resources, settled, snapshot
from tests.upstream import StandInServer

pytestmark = pytest.mark.usefixtures("no_server_errors")

PROMPT = "one two three four"
BOUND_S = 15.0  # generous: the machine is shared; a hang runs into the test's 120 s timeout
TIMEOUT_S = 2  # LMSTUDIO_TIMEOUT for the hang and drip faults
HUGE = 1_500_000  # characters in one SSE line: over 1 MB


@dataclass(frozen=True)
class Endpoint:
    """A route that calls the upstream, and how to read its answer."""

    id: str
    path: str
    stream: bool

    def body(self) -> dict[str, Any]:
        if self.path.startswith("/v1/"):
            messages = [{"role": "user", "content": PROMPT}]
            return {"model": MODEL, "messages": messages, "stream": self.stream}
        return {"prompt": PROMPT}

    def outcome(self, response: httpx.Response) -> tuple[int, str | None, str]:
        """(status, error type or None, text) however the route words it."""
        if response.status_code != 200:
            body = response.json()
            error = body.get("error", body)
            return response.status_code, error["type"], ""
        if not self.stream:
            body = response.json()
            text = body["choices"][0]["message"]["content"] if "choices" in body else body["text"]
            return 200, None, text
        text, kind = "", None
        for name, data in sse_events(response.text):
            if data == "[DONE]":
                continue
            if name == "error" or "error" in data:
                kind = data.get("type") or data["error"]["type"]
            elif "choices" in data:
                text += data["choices"][0]["delta"].get("content") or ""
            elif name == "delta":
                text += data.get("text", "")
        return 200, kind, text


ENDPOINTS = [
    Endpoint("llm-generate", "/api/v1/llm/generate", False),
    Endpoint("llm-stream", "/api/v1/llm/stream", True),
    Endpoint("facade", "/v1/chat/completions", False),
    Endpoint("facade-stream", "/v1/chat/completions", True),
]


# ── faults tests/api does not script ─────────────────────────────────────────


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def wrong_shape(body: Any) -> Callable[..., Any]:
    """200 with well-formed JSON that is not a chat completion (as a stream: one event)."""

    async def handler(request: web.Request, record: Any) -> web.StreamResponse:
        if record.json.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: " + json.dumps(body).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(body)

    return handler


def huge_line() -> Callable[..., Any]:
    """One token of HUGE characters: as a stream, a single SSE line over 1 MB."""

    async def handler(request: web.Request, record: Any) -> web.StreamResponse:
        text = "x" * HUGE
        if not record.json.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-huge",
                    "object": "chat.completion",
                    "created": 0,
                    "model": MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk({"role": "assistant", "content": text}))
        await response.write(_chunk({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    return handler


def slow_drip(every: float = 0.25, seconds: float = 8.0) -> Callable[..., Any]:
    """Headers at once, then one byte every `every` s of a body that never completes within
    `seconds`: each read gets something, so only a bound on the whole reply ends it."""

    async def handler(request: web.Request, record: Any) -> web.StreamResponse:
        stream = bool(record.json.get("stream"))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream" if stream else "application/json"}
        )
        await response.prepare(request)
        payload = (b"data: " if stream else b"") + b'{"id": "chatcmpl-drip", "choices": ['
        payload = payload.ljust(int(seconds / every))[: int(seconds / every)]
        try:
            for byte in payload:
                await response.write(bytes([byte]))
                await asyncio.sleep(every)
        except (ConnectionResetError, RuntimeError):
            pass  # the client gave up: what the test expects
        return response

    return handler


@dataclass(frozen=True)
class NewFault:
    id: str
    arrange: Callable[[Upstreams], None]
    # (status, error type) answers accepted; (200, None) is success
    accepted: frozenset[tuple[int, str | None]]
    text_length: int | None = None  # on success, the whole text must have arrived
    bound_s: float = BOUND_S  # the answer must come sooner than this


UPSTREAM_ERROR = frozenset({(502, "llm_upstream_error"), (200, "llm_upstream_error")})
TIMED_OUT = frozenset({(504, "llm_timeout_error"), (200, "llm_timeout_error")})


def _script(handler: Callable[[], Callable[..., Any]], timeout: int = 60) -> Any:
    def arrange(up: Upstreams) -> None:
        up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0, lmstudio_timeout=timeout)
        up.default.enqueue(handler())

    return arrange


NEW_FAULTS = [
    NewFault("wrong_shape_no_choices", _script(lambda: wrong_shape({"id": "x"})), UPSTREAM_ERROR),
    NewFault(
        "wrong_shape_choices_not_a_list",
        _script(lambda: wrong_shape({"id": "x", "choices": "nope"})),
        UPSTREAM_ERROR,
    ),
    NewFault("wrong_shape_a_list", _script(lambda: wrong_shape([1, 2, 3])), UPSTREAM_ERROR),
    NewFault(
        "sse_line_over_1mb",
        _script(huge_line),
        UPSTREAM_ERROR | {(200, None)},  # relayed whole, or refused as an upstream error
        text_length=HUGE,
    ),
    # The drip lasts 8 s; LMSTUDIO_TIMEOUT=2 must end the request well before that.
    NewFault(
        "slow_drip", _script(slow_drip, timeout=TIMEOUT_S), TIMED_OUT, bound_s=3 * TIMEOUT_S + 1
    ),
]


# ── the checks every fault gets ──────────────────────────────────────────────


def _ports(up: Upstreams) -> set[int]:
    return {up.default.port, up.v04.port}


async def _baseline(client: httpx.AsyncClient, headers: Headers, up: Upstreams) -> Resources:
    """Serve normal requests first (every endpoint, both stand-ins), so that the pooled
    connections a fault may legitimately reuse already exist."""
    await wait_streams_idle(client, timeout=15)  # a previous test's upstream may still drip
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0, lmstudio_base_url=up.v04.base_url)
    response = await client.post(ENDPOINTS[0].path, json=ENDPOINTS[0].body(), headers=headers)
    assert response.status_code == 200, response.text
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    for endpoint in ENDPOINTS:
        response = await client.post(endpoint.path, json=endpoint.body(), headers=headers)
        assert response.status_code == 200, response.text
    await wait_streams_idle(client)
    return await settled(snapshot(_ports(up)), _ports(up), seconds=0.2)


async def _afterwards_all_is_well(
    client: httpx.AsyncClient, headers: Headers, up: Upstreams, baseline: Resources
) -> None:
    """Nothing held beyond the baseline, and the next request of each kind is served."""
    up.default.reset()
    up.v04.reset()
    up.env.set(lmstudio_model=MODEL, lmstudio_max_retries=0)
    await wait_streams_idle(client, timeout=5)
    after = await settled(baseline, _ports(up))
    assert after.within(baseline), f"left behind: before {baseline}, after {after}"
    for endpoint in ENDPOINTS:
        response = await client.post(endpoint.path, json=endpoint.body(), headers=headers)
        status, kind, text = endpoint.outcome(response)
        assert (status, kind) == (200, None), response.text[:500]
        assert text, "the next request got no text"


async def _timed(
    client: httpx.AsyncClient, endpoint: Endpoint, headers: Headers, bound_s: float = BOUND_S
) -> httpx.Response:
    started = time.monotonic()
    response = await client.post(endpoint.path, json=endpoint.body(), headers=headers)
    elapsed = time.monotonic() - started
    assert elapsed < bound_s, f"{endpoint.id} answered after {elapsed:.1f} s (bound {bound_s} s)"
    return response


def _cases(faults: list[Any], endpoints: list[Endpoint]) -> list[Any]:
    return [pytest.param(f, e, id=f"{f.id}-{e.id}") for f in faults for e in endpoints]


@pytest.mark.parametrize(("fault", "endpoint"), _cases(NEW_FAULTS, ENDPOINTS))
async def test_new_fault_is_answered_in_bounded_time_and_leaves_nothing(
    client: httpx.AsyncClient,
    upstreams: Upstreams,
    admin_headers: Headers,
    fault: NewFault,
    endpoint: Endpoint,
) -> None:
    baseline = await _baseline(client, admin_headers, upstreams)
    fault.arrange(upstreams)
    response = await _timed(client, endpoint, admin_headers, fault.bound_s)
    status, kind, text = endpoint.outcome(response)
    assert (status, kind) in fault.accepted, response.text[:500]
    if (status, kind) == (200, None) and fault.text_length is not None:
        assert len(text) == fault.text_length
    await _afterwards_all_is_well(client, admin_headers, upstreams, baseline)


# The fault table of tests/api, at one route of each router, plain and streamed.
KNOWN_AT = [ENDPOINTS[0], ENDPOINTS[3]]


@pytest.mark.parametrize(("fault", "endpoint"), _cases(FAULTS, KNOWN_AT))
async def test_known_fault_leaves_nothing_behind(
    client: httpx.AsyncClient,
    upstreams: Upstreams,
    admin_headers: Headers,
    fault: Fault,
    endpoint: Endpoint,
) -> None:
    baseline = await _baseline(client, admin_headers, upstreams)
    fault.arrange(upstreams)
    response = await client.post(
        endpoint.path, json={**endpoint.body(), "model": fault.model}, headers=admin_headers
    )
    status, kind, _ = endpoint.outcome(response)
    assert (status, kind) == (fault.status_for(endpoint.stream), fault.kind), response.text[:500]
    await _afterwards_all_is_well(client, admin_headers, upstreams, baseline)


@pytest.mark.parametrize(("arrange", "text", "message"), AFTER_TEXT)
@pytest.mark.parametrize("endpoint", [ENDPOINTS[1], ENDPOINTS[3]], ids=lambda e: e.id)
async def test_stream_cut_mid_way_leaves_nothing_behind(
    client: httpx.AsyncClient,
    upstreams: Upstreams,
    admin_headers: Headers,
    arrange: Callable[[StandInServer], None],
    text: str,
    message: str,
    endpoint: Endpoint,
) -> None:
    baseline = await _baseline(client, admin_headers, upstreams)
    upstreams.env.set(lmstudio_model=MODEL, lmstudio_max_retries=2)
    arrange(upstreams.default)
    response = await _timed(client, endpoint, admin_headers)
    status, kind, got = endpoint.outcome(response)
    assert (status, kind) == (200, "llm_upstream_error")
    assert got == text
    await _afterwards_all_is_well(client, admin_headers, upstreams, baseline)


async def test_repeated_hangs_leave_no_upstream_connection(
    client: httpx.AsyncClient, upstreams: Upstreams, admin_headers: Headers
) -> None:
    """Five requests that time out in a row: each abandoned connection is closed, not pooled
    (a pooled one would hold the stand-in's slot and grow with every timeout)."""
    baseline = await _baseline(client, admin_headers, upstreams)
    upstreams.env.set(lmstudio_model=MODEL, lmstudio_timeout=1, lmstudio_max_retries=0)
    upstreams.default.delay(3, times=5)
    endpoint = ENDPOINTS[0]
    answers = await asyncio.gather(
        *(client.post(endpoint.path, json=endpoint.body(), headers=admin_headers) for _ in range(5))
    )
    assert [a.status_code for a in answers] == [504] * 5
    await _afterwards_all_is_well(client, admin_headers, upstreams, baseline)
