"""The OpenAI provider against a stand-in speaking OpenAI's dialect (key required, error
objects instead of strings, json_object accepted)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from app.services.llm import LLMUpstreamError, get_llm_service_with_overrides
from app.services.llm.errors import LLMAuthenticationError, LLMModelNotFoundError
from app.services.llm.protocol import LLMService
from tests.conftest import LLMEnv
from tests.upstream import StandInServer

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def openai_upstream() -> Iterator[StandInServer]:
    with StandInServer(
        models=["gpt-4o-mini"], error_style="openai", api_key=KEY, json_object_supported=True
    ) as server:
        yield server


@pytest.fixture
def upstream_openai(openai_upstream: StandInServer) -> Iterator[StandInServer]:
    openai_upstream.reset()
    return openai_upstream


async def service(llm_env: LLMEnv, server: StandInServer, key: str = KEY) -> LLMService:
    llm_env.set(
        openai_base_url=server.base_url,
        openai_api_key=key,
        openai_model="gpt-4o-mini",
        openai_max_retries=0,
    )
    return (await get_llm_service_with_overrides(provider="openai")).service


async def test_reply_with_the_key_as_bearer(
    llm_env: LLMEnv, upstream_openai: StandInServer
) -> None:
    llm = await service(llm_env, upstream_openai)
    assert await llm.get_response("hello") == "Echo: hello"
    assert upstream_openai.chat_requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_structured_uses_a_strict_json_schema(
    llm_env: LLMEnv, upstream_openai: StandInServer
) -> None:
    class City(BaseModel):
        name: str
        population: int

    llm = await service(llm_env, upstream_openai)
    city = await llm.get_structured_response("a city", City)
    assert isinstance(city, City)
    sent = upstream_openai.chat_requests[0].json["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["additionalProperties"] is False


async def test_a_wrong_key_names_the_variable_and_is_not_echoed(
    llm_env: LLMEnv, upstream_openai: StandInServer
) -> None:
    llm = await service(llm_env, upstream_openai, key="sk-wrong-key-999")
    with pytest.raises(LLMAuthenticationError) as caught:
        await llm.get_response("hello")
    assert caught.value.message == (
        f"OpenAI at {upstream_openai.base_url} rejected the credentials (HTTP 401): "
        "set OPENAI_API_KEY to a valid key"
    )
    assert "sk-wrong" not in caught.value.message


async def test_error_objects_are_read(llm_env: LLMEnv, upstream_openai: StandInServer) -> None:
    llm = await service(llm_env, upstream_openai)
    upstream_openai.fail(
        500, body={"error": {"message": "The server had an error", "type": "server_error"}}
    )
    with pytest.raises(LLMUpstreamError) as caught:
        await llm.get_response("hello")
    assert caught.value.message == (
        f"OpenAI at {upstream_openai.base_url} answered HTTP 500: The server had an error"
    )


async def test_unknown_model(llm_env: LLMEnv, upstream_openai: StandInServer) -> None:
    llm_env.set(
        openai_base_url=upstream_openai.base_url, openai_api_key=KEY, openai_model="gpt-4o-mini"
    )
    llm = (await get_llm_service_with_overrides("openai", "gpt-9")).service
    with pytest.raises(LLMModelNotFoundError) as caught:
        await llm.get_response("hello")
    assert caught.value.message.startswith(
        f"Model 'gpt-9' is not available on OpenAI at {upstream_openai.base_url}: "
    )
