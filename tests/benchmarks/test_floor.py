"""The floor servers answer what the gateway answers, so the floors compare like with like."""

from __future__ import annotations

import httpx

from benchmarks.floor import BODY, FloorServer
from benchmarks.processes import Upstream
from benchmarks.upstream import TEXT


def test_constant_and_relay_answer_a_completion_and_the_relay_streams() -> None:
    with (
        Upstream(stream_chunks=3, chunk_interval_ms=0) as upstream,
        FloorServer("constant", upstream.base_url) as constant,
        FloorServer("relay", upstream.base_url) as relay,
    ):
        for server in (constant, relay):
            reply = httpx.post(server.url, json=BODY, timeout=10)
            assert reply.status_code == 200
            assert reply.json()["choices"][0]["message"]["content"] == TEXT
        streamed = httpx.post(relay.url, json={**BODY, "stream": True}, timeout=10)
        assert streamed.headers["content-type"] == "text/event-stream"
        events = [line for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert len(events) >= 4  # three chunks, the finish chunk, [DONE]
