"""Everything `lmstudio-integration.md` shows, run verbatim against the stand-in LM Studio.

The Python snippets are the document's text, executed with top-level await; the HTTP calls
are the document's requests; the env vars are the document's names (with LMSTUDIO_BASE_URL
pointing at the stand-in on loopback).
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.core.config import Settings, get_settings, set_settings
from app.core.db import get_engine
from tests.conftest import LLMEnv
from tests.upstream import StandInServer

BASIC = """
from app.services.llm import get_llm_service

# Get configured LLM service
llm_service = await get_llm_service()

# Generate response
response = await llm_service.get_response("Explain quantum computing")
print(response)
"""

OVERRIDE = """
from app.services.llm.factory import get_llm_service_with_overrides

# Use specific LMStudio model
result = await get_llm_service_with_overrides(
    provider="lmstudio",
    model="mistral-7b-instruct"
)

response = await result.service.get_response("Write a Python function")
print(f"Used provider: {result.provider}, model: {result.model}")
"""

STRUCTURED = """
from pydantic import BaseModel

class CodeResponse(BaseModel):
    language: str
    code: str
    explanation: str

response = await llm_service.get_structured_response(
    "Write a hello world function in Python",
    CodeResponse
)
"""

DEBUG = """
import logging
logging.getLogger("app.services.llm").setLevel(logging.DEBUG)
"""


async def run_snippet(source: str, namespace: dict[str, Any]) -> str:
    """Execute a snippet as written (top-level await allowed); returns what it printed."""
    code = compile(source, "<seed>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = eval(code, namespace)  # noqa: S307 - the document's own code
        if result is not None:
            await result
    return out.getvalue()


@pytest.fixture(autouse=True)
def restore_llm_log_level() -> Iterator[None]:
    """The debug snippet changes a process-wide logger; put it back afterwards."""
    yield
    logging.getLogger("app.services.llm").setLevel(logging.NOTSET)


@pytest.fixture
def seed_env(llm_env: LLMEnv, upstream: StandInServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The document's environment variables, read by the real Settings class."""
    monkeypatch.setenv("LLM_PROVIDER", "lmstudio")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", upstream.base_url)
    monkeypatch.setenv("LMSTUDIO_MODEL", "local-model")
    keep = llm_env.original.model_dump(
        include={
            "database_url",
            "secret_key",
            "first_superuser_email",
            "first_superuser_password",
            "llm_retry_backoff",
        }
    )
    settings = Settings(_env_file=None, **keep)  # type: ignore[call-arg]
    set_settings(settings)
    return settings


async def test_env_vars_are_the_fallback(seed_env: Settings) -> None:
    assert seed_env.llm_provider == "lmstudio"
    assert seed_env.lmstudio_model == "local-model"
    namespace: dict[str, Any] = {}
    await run_snippet(
        "from app.services.llm import get_llm_service\nllm_service = await get_llm_service()",
        namespace,
    )
    assert namespace["llm_service"].model == "local-model"


async def test_the_whole_document_in_order(
    seed_env: Settings,
    upstream: StandInServer,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = admin_headers["Authorization"].removeprefix("Bearer ")

    # GET /api/v1/llm-settings/lmstudio/models
    models = await client.get(
        "/api/v1/llm-settings/lmstudio/models", headers={"Authorization": f"Bearer {token}"}
    )
    assert models.status_code == 200
    assert models.json() == ["llama-3.2-3b-instruct", "mistral-7b-instruct", "codellama-7b"]

    # PATCH /api/v1/llm-settings
    patch = await client.patch(
        "/api/v1/llm-settings",
        content='{\n  "provider": "lmstudio",\n  "lmstudio_model": "llama-3.2-3b-instruct"\n}',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    assert patch.status_code == 200, patch.text
    assert patch.json()["model"] == "llama-3.2-3b-instruct"

    # Debug mode
    namespace: dict[str, Any] = {}
    await run_snippet(DEBUG, namespace)
    caplog.set_level(logging.DEBUG, logger="app.services.llm")

    # Basic text generation: the saved model wins over LMSTUDIO_MODEL
    printed = await run_snippet(BASIC, namespace)
    assert printed == "Echo: Explain quantum computing\n"
    assert upstream.chat_requests[-1].json["model"] == "llama-3.2-3b-instruct"
    assert "model='llama-3.2-3b-instruct'" in caplog.text

    # Model override
    printed = await run_snippet(OVERRIDE, namespace)
    assert printed == "Used provider: lmstudio, model: mistral-7b-instruct\n"
    assert upstream.chat_requests[-1].json["model"] == "mistral-7b-instruct"

    # Structured response (reuses llm_service from the first snippet)
    await run_snippet(STRUCTURED, namespace)
    response = namespace["response"]
    assert type(response).__name__ == "CodeResponse"
    assert isinstance(response, namespace["CodeResponse"])
    assert upstream.chat_requests[-1].json["response_format"]["type"] == "json_schema"

    # Streaming
    chunks = [
        c async for c in namespace["llm_service"].stream_response("Explain quantum computing")
    ]
    assert len(chunks) > 1
    assert "".join(chunks) == "Echo: Explain quantum computing"


def test_lmstudio_config_as_documented() -> None:
    from app.services.llm.config import LMStudioConfig

    config = LMStudioConfig(base_url="http://localhost:1234/v1", default_model="local-model")
    assert (config.max_retries, config.timeout) == (3, 60)
    assert set(LMStudioConfig.model_fields) == {
        "base_url",
        "default_model",
        "max_retries",
        "timeout",
    }


async def test_llmsettings_table_has_lmstudio_model_varchar(database_url: str) -> None:
    async with get_engine().connect() as conn:
        columns = await conn.run_sync(
            lambda c: {col["name"]: col["type"] for col in sa.inspect(c).get_columns("llmsettings")}
        )
    assert isinstance(columns["lmstudio_model"], sa.String)
    assert get_settings().database_url == database_url
