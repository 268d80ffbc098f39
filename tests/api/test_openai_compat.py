"""The OpenAI-compatible facade, driven by the official `openai` SDK over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.api.llm_faults_support import scrape, value, wait_streams_idle
from tests.conftest import LLMEnv, UserFactory
from tests.upstream import StandInServer

MODEL = "llama-3.2-3b-instruct"


@pytest.fixture
async def sdk(
    client: httpx.AsyncClient, llm_env: LLMEnv, make_user: UserFactory, app_url: str
) -> AsyncIterator[openai.AsyncOpenAI]:
    llm_env.set(lmstudio_model=MODEL)
    user = await make_user()
    key = (await client.post("/api/v1/api-keys", json={"name": "sdk"}, headers=user.headers)).json()
    async with openai.AsyncOpenAI(
        base_url=f"{app_url}/v1", api_key=key["key"], max_retries=0
    ) as sdk_client:
        yield sdk_client


async def test_models(sdk: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in sdk.models.list()]
    assert ids[0] == "default"
    assert f"lmstudio/{MODEL}" in ids


async def test_chat_completion(sdk: openai.AsyncOpenAI, upstream: StandInServer) -> None:
    upstream.reply("Hi from the stand-in")
    reply = await sdk.chat.completions.create(
        model="default",
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}],
        temperature=0.2,
        max_tokens=30,
        stop=["\n\n"],
    )
    assert reply.choices[0].message.content == "Hi from the stand-in"
    assert reply.model == f"lmstudio/{MODEL}"
    assert reply.usage is not None
    assert reply.usage.total_tokens > 0
    sent = upstream.chat_requests[-1].json
    assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.2, 30, ["\n\n"])


async def test_streaming(sdk: openai.AsyncOpenAI, upstream: StandInServer) -> None:
    upstream.reply("a b c d")
    stream = await sdk.chat.completions.create(
        model=f"lmstudio/{MODEL}",
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "a b c d"
    assert usage is not None


async def test_json_object_is_translated_for_lm_studio(
    sdk: openai.AsyncOpenAI, upstream: StandInServer
) -> None:
    reply = await sdk.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].message.content is not None
    assert upstream.chat_requests[-1].json["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
                "strict": True,
            },
        },
        {"type": "json_schema", "json_schema": {"name": "anything"}},
    ],
    ids=["text", "json_schema", "json_schema_without_schema"],
)
async def test_valid_response_formats_reach_the_upstream_as_sent(
    sdk: openai.AsyncOpenAI, upstream: StandInServer, response_format: dict[str, Any]
) -> None:
    reply = await sdk.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "json please"}],
        response_format=response_format,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content is not None
    assert upstream.chat_requests[-1].json["response_format"] == response_format


async def test_bad_key_is_an_openai_authentication_error(app_url: str, llm_env: LLMEnv) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{app_url}/v1", api_key="lmb_nope", max_retries=0
    ) as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()


async def test_metrics_count_facade_calls(
    client: httpx.AsyncClient, sdk: openai.AsyncOpenAI, upstream: StandInServer
) -> None:
    await wait_streams_idle(client)
    before = await scrape(client)
    await sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    upstream.no_models_loaded()
    with pytest.raises(openai.InternalServerError):
        await sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "y"}], stream=True
        )
    after = await scrape(client)
    labels = {"provider": "lmstudio", "model": MODEL}
    for kind, outcome in (("complete", "ok"), ("stream", "llm_no_models_error")):
        sample = {**labels, "kind": kind, "outcome": outcome}
        assert (
            value(after, "llm_requests_total", **sample)
            - value(before, "llm_requests_total", **sample)
            == 1
        )
    completion = {**labels, "direction": "completion"}
    assert value(after, "llm_tokens_total", **completion) > value(
        before, "llm_tokens_total", **completion
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
    ],
)
async def test_unsupported_features_are_refused_not_ignored(
    sdk: openai.AsyncOpenAI, upstream: StandInServer, extra: dict[str, object], named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], extra_body=extra
        )
    assert caught.value.code == "unsupported_parameter"
    assert f"does not support {named}" in caught.value.message
    assert upstream.chat_requests == []


async def test_harmless_extra_fields_are_accepted(
    sdk: openai.AsyncOpenAI, upstream: StandInServer
) -> None:
    reply = await sdk.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "x"}],
        n=1,
        top_p=0.9,
        user="someone",
    )
    assert reply.choices[0].message.content
