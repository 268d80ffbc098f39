"""Reading what upstreams send: error bodies, usage, reasoning, and what an exception means."""

from __future__ import annotations

from typing import Any

import openai

from app.services.llm.protocol import Usage

# What a call to the upstream may raise: SDK errors, socket errors, timeouts, and
# ValueError for a body that is not JSON. Anything else is a bug of ours and propagates.
UPSTREAM_FAILURES = (openai.OpenAIError, OSError, TimeoutError, ValueError)


def upstream_message(exc: openai.APIStatusError) -> str:
    """The error text an upstream sent: LM Studio sends a string, OpenAI an object."""
    body = exc.body
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, str):
            return inner
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    text = exc.response.text if exc.response is not None else ""
    return text[:300] or exc.message


def reasoning_of(message: Any) -> str | None:
    # LM Studio and llama.cpp put a reasoning model's thinking in `reasoning_content`.
    value = getattr(message, "reasoning_content", None)
    if value is None and message.model_extra:
        value = message.model_extra.get("reasoning_content") or message.model_extra.get("reasoning")
    return value if isinstance(value, str) and value else None


def usage_of(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )


def context_from_meta(model: Any) -> int | None:
    # llama.cpp's server reports the context it was started with in `meta.n_ctx`.
    meta = (model.model_extra or {}).get("meta")
    n_ctx = meta.get("n_ctx") if isinstance(meta, dict) else None
    return n_ctx if isinstance(n_ctx, int) else None


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def stale_connection(exc: BaseException) -> bool:
    """True when the request failed writing to a connection the server had closed."""
    return any(isinstance(c, ConnectionResetError | BrokenPipeError) for c in causes(exc))


def refused(exc: BaseException) -> bool:
    """True if a "timeout" was really a failed connect (the aiohttp transport reports a
    refused connection as ConnectTimeout)."""
    return any(isinstance(c, OSError) and not isinstance(c, TimeoutError) for c in causes(exc))


def retry_after_of(exc: openai.APIStatusError) -> float | None:
    header = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(header) if header else None
    except ValueError:
        return None
