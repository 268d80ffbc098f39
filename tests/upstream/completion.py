"""One chat completion, laid out on the wire the way LM Studio or OpenAI does it.

Shapes, from captured LM Studio answers (lmstudio-ai/lmstudio-bug-tracker issues #378, #601,
#619, #676) and the documented REST API v0 example:

* non-stream: ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index",
  "logprobs": null, "finish_reason", "message": {"role", "content"}}], "usage", "stats": {},
  "system_fingerprint": <model>}`` (``/api/v0`` fills ``stats`` and adds ``model_info`` and
  ``runtime``);
* stream: every chunk is ``{"id", "object": "chat.completion.chunk", "created", "model",
  "system_fingerprint", "choices": [{"index", "delta", "logprobs": null, "finish_reason"}]}``;
  LM Studio repeats ``"role": "assistant"`` in each delta, the last chunk has an empty delta
  and the finish_reason, then ``data: [DONE]``. OpenAI opens with a role-only delta instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .tool_use import PlannedCall, openai_call, openai_call_pieces

__all__ = ["Answer", "Completion", "count_prompt_tokens", "last_user_text", "pad", "split_tokens"]

DONE = b"data: [DONE]\n\n"
_WORD = re.compile(r"\s*\S+")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def split_tokens(text: str) -> list[str]:
    """Split text into the stand-in's "tokens": each word with the whitespace before it.

    ``"".join(split_tokens(t)) == t`` always holds; these are the content deltas of a
    stream and what ``max_tokens`` counts.
    """
    pieces: list[str] = _WORD.findall(text)
    tail = text[sum(map(len, pieces)) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces.append(tail)
    return pieces


def pad(pieces: list[str], n: int) -> list[str]:
    """Exactly ``n`` tokens: cut, or filled up with `` w<i>``."""
    if len(pieces) >= n:
        return pieces[:n]
    return pieces + [f" w{i}" for i in range(len(pieces), n)]


def text_of(content: Any) -> str:
    """The text of a message's content (a string, or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def last_user_text(messages: Sequence[Any]) -> str:
    """The text of the last user message ("" when there is none)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def count_prompt_tokens(messages: Sequence[Any]) -> int:
    """Words in every message, plus one per message."""
    return sum(len(text_of(m.get("content")).split()) + 1 for m in messages if isinstance(m, dict))


@dataclass
class Answer:
    """What a chat completion says, as tokens, before it is put on the wire."""

    content: list[str]
    reasoning: list[str]
    finish_reason: str
    prompt_tokens: int
    tool_calls: list[PlannedCall] = field(default_factory=list)

    @property
    def usage(self) -> dict[str, int]:
        """OpenAI's usage object."""
        done = len(self.content) + len(self.reasoning) + 10 * len(self.tool_calls)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }


class Completion:
    """Serialises one answer as a JSON body or as SSE events."""

    def __init__(self, number: int, model: str, *, lmstudio: bool, native: bool) -> None:
        self.lmstudio = lmstudio
        self.native = native and lmstudio
        self.model = model
        self.id = f"chatcmpl-{_base36(number).rjust(21, '0')}"
        self.created = int(time.time())
        self.fingerprint = model if lmstudio else "fp_standin"

    def body(self, answer: Answer) -> bytes:
        """The non-streaming response body."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(answer.content)}
        if answer.reasoning:
            message["reasoning_content"] = "".join(answer.reasoning)
        if not self.lmstudio:
            message["refusal"] = None
            message["annotations"] = []
        if answer.tool_calls:
            # OpenAI sends `content: null` beside tool calls; LM Studio an empty string.
            message["content"] = message["content"] or ("" if self.lmstudio else None)
            message["tool_calls"] = [openai_call(call) for call in answer.tool_calls]
        choice = {
            "index": 0,
            "logprobs": None,
            "finish_reason": answer.finish_reason,
            "message": message,
        }
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": answer.usage,
        }
        if self.native:
            body["stats"] = _native_stats(answer)
            body["model_info"] = {"arch": "llama", "quant": "Q4_K_M", "format": "gguf"}
            body["runtime"] = {"name": "standin", "version": "1.0.0", "supported_formats": ["gguf"]}
        elif self.lmstudio:
            body["stats"] = {}
        else:
            body["service_tier"] = "default"
        body["system_fingerprint"] = self.fingerprint
        return orjson.dumps(body)

    def frames(self, answer: Answer, include_usage: bool) -> Iterator[tuple[bytes, bool]]:
        """SSE events as ``(bytes, carries_a_token)``, ending with ``data: [DONE]``."""
        head = orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": self.fingerprint,
            }
        )[:-1]  # left open for "choices"
        prefix = b"data: " + head + b',"choices":[{"index":0,"delta":'
        open_tail = b',"logprobs":null,"finish_reason":null}]}\n\n'
        role: dict[str, Any] = {"role": "assistant"} if self.lmstudio else {}
        if not self.lmstudio or not (answer.content or answer.reasoning):
            first: dict[str, Any] = {"role": "assistant", "content": ""}
            if not self.lmstudio:
                first["refusal"] = None
            yield prefix + orjson.dumps(first) + open_tail, False
        for piece in answer.reasoning:
            yield prefix + orjson.dumps({**role, "reasoning_content": piece}) + open_tail, True
        for piece in answer.content:
            yield prefix + orjson.dumps({**role, "content": piece}) + open_tail, True
        for index, call in enumerate(answer.tool_calls):
            for piece in openai_call_pieces(call, index):
                yield prefix + orjson.dumps({**role, "tool_calls": [piece]}) + open_tail, True
        finish = orjson.dumps(answer.finish_reason)
        yield prefix + b'{},"logprobs":null,"finish_reason":' + finish + b"}]}\n\n", False
        if include_usage:
            usage = orjson.dumps(answer.usage)
            yield b"data: " + head + b',"choices":[],"usage":' + usage + b"}\n\n", False
        yield DONE, False


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if n == 0:
            return out


def _native_stats(answer: Answer) -> dict[str, Any]:
    return {
        "tokens_per_second": 1000.0,
        "time_to_first_token": 0.001,
        "generation_time": len(answer.content) / 1000.0,
        "stop_reason": "maxPredictedTokensReached"
        if answer.finish_reason == "length"
        else "eosFound",
    }
