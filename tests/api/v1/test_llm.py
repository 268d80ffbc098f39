"""The LLM endpoints over real HTTP against the stand-in LM Studio."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.api.llm_faults_support import sse_events
from tests.conftest import LLMEnv
from tests.upstream import StandInServer

MODEL = "llama-3.2-3b-instruct"
Headers = dict[str, str]


@pytest.fixture
def llm(llm_env: LLMEnv) -> LLMEnv:
    llm_env.set(lmstudio_model=MODEL)
    return llm_env


async def test_generate(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    upstream.reply("Hello there")
    response = await client.post(
        "/api/v1/llm/generate", json={"prompt": "hi", "max_tokens": 20}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "Hello there"
    assert (body["provider"], body["model"]) == ("lmstudio", MODEL)
    assert body["usage"]["completion_tokens"] > 0
    assert body["latency_ms"] > 0


async def test_generate_with_override(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    response = await client.post(
        "/api/v1/llm/generate",
        json={"prompt": "hi", "provider": "lmstudio", "model": "codellama-7b"},
        headers=admin_headers,
    )
    assert response.json()["model"] == "codellama-7b"
    assert upstream.chat_requests[-1].json["model"] == "codellama-7b"


async def test_structured(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
    }
    upstream.reply_json({"name": "Ada", "age": -1})
    response = await client.post(
        "/api/v1/llm/structured",
        json={"prompt": "a person", "schema": schema},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["attempts"] == 2
    assert body["data"]["age"] >= 0


async def test_stream(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    upstream.reply("one two three four")
    response = await client.post(
        "/api/v1/llm/stream", json={"prompt": "count"}, headers=admin_headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    deltas = [e for name, e in events if name == "delta"]
    assert "".join(str(d["text"]) for d in deltas) == "one two three four"
    assert len(deltas) == 4
    assert events[-1][0] == "done"


async def test_client_disconnect_cancels_the_upstream(
    client: httpx.AsyncClient, llm: LLMEnv, upstream: StandInServer, admin_headers: Headers
) -> None:
    upstream.slow_stream(n_chunks=200, interval=0.05)
    async with client.stream(
        "POST", "/api/v1/llm/stream", json={"prompt": "x"}, headers=admin_headers
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                break
    assert await upstream.wait_for_disconnect_async(timeout=1.0)
    await asyncio.sleep(0)
