"""The fallback chain through the HTTP API: an admin saves it, a failing LM Studio hands the
call to the next provider, and every answer says who served it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import LLMEnv
from tests.upstream import StandInServer

Headers = dict[str, str]
KEY = "sk-test-0123456789"
LOCAL = "llama-3.2-3b-instruct"
CLOUD = "gpt-4o-mini"
ASK = {"prompt": "hello"}


@pytest.fixture(scope="module")
def cloud() -> Iterator[StandInServer]:
    with StandInServer(error_style="openai", api_key=KEY, models=[CLOUD]) as server:
        yield server


def _usable(cloud: StandInServer) -> dict[str, object]:
    """LM Studio (the session's stand-in) active; OpenAI usable through its own stand-in."""
    return {
        "lmstudio_model": LOCAL,
        "lmstudio_max_retries": 0,
        "openai_api_key": KEY,
        "openai_base_url": cloud.base_url,
        "openai_model": CLOUD,
        "openai_max_retries": 0,
    }


@pytest.fixture
def chain_env(llm_env: LLMEnv, cloud: StandInServer) -> LLMEnv:
    cloud.reset()
    llm_env.set(**_usable(cloud))
    return llm_env


async def _save_chain(client: httpx.AsyncClient, headers: Headers, *, allow_cloud: bool) -> None:
    entry = {"provider": "openai", "allow_cloud": allow_cloud}
    saved = await client.patch(
        "/api/v1/llm-settings",
        json={"provider": "lmstudio", "fallback_providers": [entry]},
        headers=headers,
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["fallback_providers"] == [entry]


def _moves() -> float:
    labels = {"from": "lmstudio", "to": "openai", "reason": "llm_upstream_error"}
    return REGISTRY.get_sample_value("llm_fallbacks_total", labels) or 0.0


@pytest.mark.usefixtures("chain_env")
async def test_generate_and_structured_are_answered_by_the_next_provider(
    client: httpx.AsyncClient, upstream: StandInServer, cloud: StandInServer, admin_headers: Headers
) -> None:
    await _save_chain(client, admin_headers, allow_cloud=True)
    before = _moves()
    upstream.fail(503)
    reply = await client.post("/api/v1/llm/generate", json=ASK, headers=admin_headers)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["provider"], reply.json()["model"]) == ("openai", CLOUD)

    upstream.fail(503)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    structured = await client.post(
        "/api/v1/llm/structured", json={**ASK, "schema": schema}, headers=admin_headers
    )
    assert structured.status_code == 200, structured.text
    assert structured.json()["provider"] == "openai"
    assert _moves() == before + 2
    assert len(cloud.chat_requests) == 2


@pytest.mark.usefixtures("chain_env")
async def test_a_stream_says_in_its_done_event_who_served_it(
    client: httpx.AsyncClient, upstream: StandInServer, admin_headers: Headers
) -> None:
    await _save_chain(client, admin_headers, allow_cloud=True)
    upstream.fail(503)
    response = await client.post("/api/v1/llm/stream", json=ASK, headers=admin_headers)
    assert response.status_code == 200, response.text
    done = response.text.split("event: done", 1)[1]
    assert '"provider":"openai"' in done
    assert f'"model":"{CLOUD}"' in done


@pytest.mark.usefixtures("chain_env")
async def test_a_call_naming_its_provider_never_falls_back(
    client: httpx.AsyncClient, upstream: StandInServer, cloud: StandInServer, admin_headers: Headers
) -> None:
    await _save_chain(client, admin_headers, allow_cloud=True)
    upstream.fail(503)
    reply = await client.post(
        "/api/v1/llm/generate", json={**ASK, "provider": "lmstudio"}, headers=admin_headers
    )
    assert reply.status_code == 502, reply.text
    assert cloud.chat_requests == []


async def test_local_stays_local_without_the_opt_in(
    client: httpx.AsyncClient,
    chain_env: LLMEnv,
    upstream: StandInServer,
    cloud: StandInServer,
    admin_headers: Headers,
) -> None:
    # Set in the environment, where nothing validates the opt-in: the call itself refuses.
    chain_env.set(**_usable(cloud), llm_fallback_providers=["openai"])
    upstream.fail(503)
    reply = await client.post("/api/v1/llm/generate", json=ASK, headers=admin_headers)
    assert reply.status_code == 502, reply.text
    assert cloud.chat_requests == []

    chain_env.set(
        **_usable(cloud), llm_fallback_providers=["openai"], llm_fallback_allow_cloud=["openai"]
    )
    upstream.fail(503)
    reply = await client.post("/api/v1/llm/generate", json=ASK, headers=admin_headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["provider"] == "openai"
