"""What an embeddings call accepts, and how its texts are split across upstream calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from app.services.llm.errors import LLMConfigurationError, LLMInvalidRequestError
from app.services.llm.providers.base import ProviderSpec

T = TypeVar("T")

MAX_EMBEDDING_INPUTS = 2048
"""Texts per embeddings call, as OpenAI's API allows."""
MAX_EMBEDDING_DIMENSIONS = 65_536
EMBEDDING_CONCURRENCY = 4
"""Upstream calls one embeddings call makes at a time (a provider that takes one text per
call, Bedrock's Titan, is asked for several at once, within the provider's own slot)."""


def embedding_texts(texts: str | Sequence[str]) -> list[str]:
    """`texts` as a list, or LLMInvalidRequestError saying what is wrong with it."""
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise LLMInvalidRequestError("input: give at least one text to embed")
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise LLMInvalidRequestError(
            f"input: at most {MAX_EMBEDDING_INPUTS} texts per call, not {len(items)}; "
            "split them across calls"
        )
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise LLMInvalidRequestError(f"input[{index}]: a text to embed must be a string")
        if not text:
            raise LLMInvalidRequestError(
                f"input[{index}] is empty: every text to embed needs at least one character"
            )
        try:
            text.encode()
        except UnicodeEncodeError:
            # Refused before any batch is sent, not by the batch that holds it.
            raise LLMInvalidRequestError(
                f"input[{index}] is not valid Unicode (a lone UTF-16 surrogate such as "
                "\\ud800): send well-formed text"
            ) from None
    return items


def check_dimensions(dimensions: int | None) -> None:
    """LLMInvalidRequestError for a `dimensions` no model has."""
    if dimensions is not None and not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise LLMInvalidRequestError(
            f"dimensions must be between 1 and {MAX_EMBEDDING_DIMENSIONS}, not {dimensions}"
        )


def no_embedding_model(spec: ProviderSpec) -> LLMConfigurationError:
    """The error for a provider without an embedding model configured, naming the setting."""
    name = spec.provider.value
    return LLMConfigurationError(
        f"No {spec.display_name} embedding model is configured: set "
        f"{spec.env_prefix}_EMBEDDING_MODEL, or PATCH /api/v1/llm-settings "
        f'{{"{name}_embedding_model": "<model>"}}',
        provider=spec.provider,
    )


def batches(texts: list[str], size: int) -> list[list[str]]:
    """`texts` in consecutive runs of at most `size`."""
    size = max(1, size)
    return [texts[start : start + size] for start in range(0, len(texts), size)]


async def in_order(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """The results of `calls` in their order, at most `limit` running at once. The first
    failure cancels the rest and is raised as itself (not as an exception group)."""
    if len(calls) == 1:
        return [await calls[0]()]
    gate = asyncio.Semaphore(limit)

    async def gated(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(gated(call)) for call in calls]
    except BaseExceptionGroup as failed:
        first = failed.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]
