"""Reading what upstreams send: error bodies, usage, reasoning, and what an exception means."""

from __future__ import annotations

import unicodedata
from typing import Any

import aiohttp
import httpx2
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


def short_reason(text: str, limit: int = 300) -> str:
    """An upstream's error text fit to show and log: one line, no control characters, at
    most `limit` characters (it may echo a caller's input)."""
    printable = "".join(
        " " if unicodedata.category(char).startswith("C") else char for char in text[: limit * 4]
    )
    line = " ".join(printable.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def first_choice(body: object) -> dict[str, Any] | None:
    """The first choice of a chat completion or chunk body, when it has one."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def part_of(choice: dict[str, Any], key: str) -> dict[str, Any]:
    """A choice's `message` (completions) or `delta` (chunks); empty when malformed."""
    part = choice.get(key)
    return part if isinstance(part, dict) else {}


def text_of(part: dict[str, Any]) -> str:
    content = part.get("content")
    return content if isinstance(content, str) else ""


def reasoning_of(part: dict[str, Any]) -> str | None:
    # LM Studio and llama.cpp put a reasoning model's thinking in `reasoning_content`.
    value = part.get("reasoning_content") or part.get("reasoning")
    return value if isinstance(value, str) and value else None


def finish_reason_of(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) else None


def usage_of(body: object) -> Usage | None:
    """The usage a body reports, or None when it reports none."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    return Usage(
        prompt_tokens=_count(usage, "prompt_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
    )


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


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
    """True when the request failed on a connection the server had closed: writing to it,
    or (aiohttp) finding it closed before any answer came."""
    stale = ConnectionResetError | BrokenPipeError | aiohttp.ServerDisconnectedError
    return any(isinstance(c, stale) for c in causes(exc))


def refused(exc: BaseException) -> bool:
    """True if a "timeout" was really a failed connect (the aiohttp transport reports a
    refused connection as ConnectTimeout)."""
    return any(isinstance(c, OSError) and not isinstance(c, TimeoutError) for c in causes(exc))


def timed_out(exc: BaseException) -> bool:
    """True if `exc` is a timeout. Not merely its class: the aiohttp transport reports every
    connection failure (refused, or closed before any answer) as a ConnectTimeout; the
    transport's own exception, deeper in the chain, tells."""
    chain = causes(exc)
    if any(isinstance(c, TimeoutError) for c in chain):
        return True
    return isinstance(chain[-1], openai.APITimeoutError | httpx2.TimeoutException)


def accepted_then_timed_out(exc: BaseException) -> bool:
    """True for a read timeout: the upstream took the request and did not answer in time,
    so it is most likely generating. (Both SDK transports raise httpx's ReadTimeout for it,
    and ConnectTimeout / PoolTimeout when the request never left.)"""
    return any(isinstance(c, httpx2.ReadTimeout) for c in causes(exc))


def retry_after_of(exc: openai.APIStatusError) -> float | None:
    header = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(header) if header else None
    except ValueError:
        return None
