"""Deterministic embeddings for the stand-ins: the same text always gets the same vector, and
different texts different ones, so that tests can check order and batching."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

DIMENSIONS = 8
"""A stand-in model's own vector length."""


def vector_for(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    """`dimensions` numbers in [-1, 1) derived from a hash of `text`; each exactly
    representable as a float32, so a base64 round trip returns them unchanged."""
    numbers: list[float] = []
    counter = 0
    while len(numbers) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        numbers += [(byte - 128) / 128 for byte in digest]
        counter += 1
    return numbers[:dimensions]


def tokens_in(text: str) -> int:
    """A token count for usage: one per whitespace-separated word, at least one."""
    return max(1, len(text.split()))


def openai_reply(model: str, texts: Sequence[str], dimensions: int | None) -> dict[str, Any]:
    """OpenAI's `/v1/embeddings` response body (LM Studio and OpenRouter answer alike)."""
    tokens = sum(tokens_in(text) for text in texts)
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": index,
                "embedding": vector_for(text, dimensions or DIMENSIONS),
            }
            for index, text in enumerate(texts)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def texts_of(value: object) -> list[str] | None:
    """An embeddings request's `input` as a list of texts, or None when it is not text."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        return None
    if not all(isinstance(item, str) and item for item in items):
        return None
    return items
