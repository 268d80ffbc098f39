"""Reading what upstreams send (usage, reasoning, error text fit to show) and what a transport
exception means."""

from __future__ import annotations

import unicodedata
from typing import Any

import aiohttp

from app.services.llm.protocol import Usage


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


def vector_of(value: object) -> list[float] | None:
    """An embedding as a list of numbers, or None when `value` is not one."""
    if not isinstance(value, list) or not value:
        return None
    for number in value:
        kind = type(number)
        if kind is not float and kind is not int:
            return None
    return value


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


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def stale_connection(exc: BaseException) -> bool:
    """True when the request went to a pooled connection the server had closed.

    Writing to it fails (reset, broken pipe) or, when the server's close wins the race
    with our write, the read finds it closed with no reply at all (aiohttp's
    ServerDisconnectedError).
    """
    return any(
        isinstance(c, ConnectionResetError | BrokenPipeError | aiohttp.ServerDisconnectedError)
        for c in causes(exc)
    )
