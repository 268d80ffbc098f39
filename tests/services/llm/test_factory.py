"""Choosing the service: env defaults, the saved row, overrides, and cross-worker changes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from app.core.config import LLMProvider
from app.core.db import get_engine, get_sessionmaker
from app.models import LLMSettingsUpdate
from app.services.llm import (
    LLMConfigurationError,
    LLMService,
    ProviderService,
    get_llm_service,
    get_llm_service_with_overrides,
)
from app.services.llm import settings as settings_module
from app.services.llm.settings import SettingsWatcher, load_effective_settings, save_llm_settings
from tests.conftest import LLMEnv, serve_app
from tests.upstream import StandInServer


async def test_bare_call_uses_env_defaults(llm_env: LLMEnv) -> None:
    llm_env.set(llm_provider="lmstudio", lmstudio_model="local-model")
    service = await get_llm_service()
    assert isinstance(service, ProviderService)
    assert service.provider == "lmstudio"
    assert service.model == "local-model"
    assert isinstance(service, LLMService)


async def test_saved_model_wins_over_env(llm_env: LLMEnv) -> None:
    llm_env.set(lmstudio_model="local-model")
    async with get_sessionmaker()() as session:
        await save_llm_settings(
            session, LLMSettingsUpdate(lmstudio_model="mistral-7b-instruct"), user_id=None
        )
    assert (await get_llm_service()).model == "mistral-7b-instruct"
    effective = await load_effective_settings()
    assert effective.source == "database"
    assert effective.version == 1


async def test_overrides_and_their_result(llm_env: LLMEnv) -> None:
    llm_env.set(lmstudio_model="local-model")
    result = await get_llm_service_with_overrides(provider="lmstudio", model="mistral-7b-instruct")
    assert (result.provider, result.model) == (LLMProvider.LMSTUDIO, "mistral-7b-instruct")
    assert result.service.model == "mistral-7b-instruct"
    omitted = await get_llm_service_with_overrides()
    assert (omitted.provider, omitted.model) == ("lmstudio", "local-model")


async def test_unknown_provider_lists_choices(llm_env: LLMEnv) -> None:
    with pytest.raises(LLMConfigurationError) as caught:
        await get_llm_service_with_overrides(provider="skynet")
    assert caught.value.message == (
        "Unknown LLM provider 'skynet'; choose one of: lmstudio, openai, openrouter, ollama, "
        "bedrock"
    )


async def test_missing_model_says_what_to_set(llm_env: LLMEnv) -> None:
    llm_env.set(lmstudio_model=None)
    with pytest.raises(LLMConfigurationError) as caught:
        await get_llm_service()
    assert caught.value.message == (
        "No LM Studio model is configured: set lmstudio_model with PATCH "
        "/api/v1/llm-settings, or set LMSTUDIO_MODEL"
    )


async def test_openai_needs_a_key(llm_env: LLMEnv) -> None:
    llm_env.set(openai_model="gpt-4o-mini", openai_api_key=None)
    with pytest.raises(LLMConfigurationError, match="OPENAI_API_KEY is not set"):
        await get_llm_service_with_overrides(provider="openai")
    llm_env.set(openai_model="gpt-4o-mini", openai_api_key="sk-test")
    result = await get_llm_service_with_overrides(provider="openai")
    assert isinstance(result.service, ProviderService)
    assert result.service.provider == "openai"
    assert "sk-test" not in repr(result.service)


ANOTHER_WORKER = """
import asyncio
from app.core.db import dispose_engine, get_sessionmaker
from app.models import LLMSettingsUpdate
from app.services.llm.settings import save_llm_settings

async def main():
    async with get_sessionmaker()() as session:
        changes = LLMSettingsUpdate(provider="lmstudio", lmstudio_model="codellama-7b")
        await save_llm_settings(session, changes, user_id=None)
    await dispose_engine()

asyncio.run(main())
"""


async def test_a_save_by_another_worker_process_is_seen_within_a_second(
    llm_env: LLMEnv, database_url: str, app_url: str
) -> None:
    llm_env.set(lmstudio_model="local-model")
    assert (await get_llm_service()).model == "local-model"  # this worker's cache is warm
    if SettingsWatcher.applies_to(database_url):
        # Earlier tests kill database connections; the watcher reconnects a second later.
        listening_by = time.monotonic() + 10
        while not settings_module._cache.listening:
            assert time.monotonic() < listening_by, "the app's lifespan should be listening"
            await asyncio.sleep(0.05)

    env = {**os.environ, "DATABASE_URL": database_url, "LMSTUDIO_MODEL": "local-model"}
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", ANOTHER_WORKER, env=env)
    assert await worker.wait() == 0
    saved_at = time.monotonic()
    while (await get_llm_service()).model != "codellama-7b":
        assert time.monotonic() - saved_at < 1.0, "another worker's save not seen within 1 s"
        await asyncio.sleep(0.02)


async def test_works_as_a_fastapi_dependency(llm_env: LLMEnv, upstream: StandInServer) -> None:
    llm_env.set(lmstudio_model="llama-3.2-3b-instruct")
    app = FastAPI()

    @app.get("/ask")
    async def ask(llm: Annotated[LLMService, Depends(get_llm_service)]) -> dict[str, str]:
        return {"model": llm.model, "text": await llm.get_response("ping")}

    running = await serve_app(app)
    try:
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            body = (await http.get("/ask")).json()
    finally:
        await running.stop()
    assert body == {"model": "llama-3.2-3b-instruct", "text": "Echo: ping"}


async def test_periodic_revalidation_never_makes_a_caller_wait(
    llm_env: LLMEnv, database_url: str
) -> None:
    llm_env.set(lmstudio_model="local-model")
    assert (await load_effective_settings()).model == "local-model"  # cache warm
    # Every pooled connection taken: any database read now waits (up to the pool timeout).
    held = []
    try:
        while True:
            try:
                held.append(await asyncio.wait_for(get_engine().connect(), 0.3))
            except TimeoutError:
                break
        settings_module._cache.checked_at = float("-inf")  # due for its routine check
        started = time.monotonic()
        effective = await asyncio.wait_for(load_effective_settings(), 2)
        assert time.monotonic() - started < 0.1, "the routine check made the caller wait"
        assert effective.model == "local-model"
        revalidation = settings_module._cache.revalidating
        assert revalidation is not None
        assert not revalidation.done()  # still waiting for a pooled connection
    finally:
        for connection in held:
            await connection.close()
    await asyncio.wait_for(revalidation, 10)
    assert settings_module._cache.checked_at > started  # and then it did check


async def test_a_notify_during_the_read_a_save_waits_for_does_not_serve_the_old_settings(
    llm_env: LLMEnv,
) -> None:
    # On PostgreSQL the save's own NOTIFY arrives while the caller's read is in flight and
    # invalidates the cache again; that read is still newer than the save the caller waits on.
    llm_env.set(lmstudio_model="local-model")
    assert (await load_effective_settings()).model == "local-model"  # cache warm
    async with get_sessionmaker()() as session:
        await save_llm_settings(
            session, LLMSettingsUpdate(lmstudio_model="mistral-7b-instruct"), user_id=None
        )
    reading = asyncio.create_task(load_effective_settings())
    await asyncio.sleep(0)  # the read has started
    settings_module.invalidate_cache()  # what the watcher does on NOTIFY
    assert (await reading).model == "mistral-7b-instruct"
    assert (await load_effective_settings()).model == "mistral-7b-instruct"
