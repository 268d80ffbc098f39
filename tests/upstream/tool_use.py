"""How every stand-in "model" uses tools, whatever its provider's wire looks like.

The rule, deterministic so that a two-turn conversation needs no script: offered tools and
not told `none`, a model whose last message is a user's calls the named tool (or the
first one) with arguments made from its parameters schema; once the last message is a
tool's result, it answers with text quoting that result. Each stand-in reads its own wire
into these arguments and writes the decision back in its own wire.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .schema_gen import example_for_schema

__all__ = [
    "PlannedCall",
    "arguments_text",
    "openai_call",
    "openai_call_pieces",
    "plan_from_openai",
    "plan_tool_call",
    "tool_result_text",
]

_ids = itertools.count(1)


@dataclass(frozen=True)
class PlannedCall:
    """A tool call the stand-in model makes."""

    id: str
    name: str
    arguments: Any
    """A JSON object (a str is sent as is: scripts use that for malformed arguments)."""


def plan_tool_call(
    tools: Sequence[tuple[str, Any]], choice: str | None, last_is_tool_result: bool
) -> PlannedCall | None:
    """The call to make for `tools` (name, parameters schema) under `choice` ("auto",
    "none", "required", a function's name or None), or None to answer with text."""
    if not tools or choice == "none" or last_is_tool_result:
        return None
    chosen = next((t for t in tools if t[0] == choice), tools[0])
    schema = chosen[1] if isinstance(chosen[1], dict) else {"type": "object"}
    return PlannedCall(f"call_standin_{next(_ids)}", chosen[0], example_for_schema(schema))


def tool_result_text(result: str) -> str:
    """What the stand-in model answers after a tool's result."""
    return f"The tool said: {result}"


def last_tool_result(messages: Sequence[Any]) -> str | None:
    """The text of the conversation's last message when it is a `tool` result (OpenAI's
    and Ollama's shape), else None."""
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        content = last.get("content")
        return content if isinstance(content, str) else json.dumps(content)
    return None


def plan_from_openai(body: Any) -> PlannedCall | None:
    """`plan_tool_call` for an OpenAI-shaped chat body (also Ollama's: same `tools`)."""
    if not isinstance(body, dict):
        return None
    tools = [
        (t["function"].get("name", ""), t["function"].get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name")
    messages = body.get("messages") or []
    return plan_tool_call(tools, choice, last_tool_result(messages) is not None)


def arguments_text(call: PlannedCall) -> str:
    """The call's arguments as OpenAI sends them: JSON text."""
    if isinstance(call.arguments, str):
        return call.arguments
    return json.dumps(call.arguments, separators=(",", ":"))


def openai_call(call: PlannedCall) -> dict[str, Any]:
    """The call in an OpenAI message's `tool_calls`."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments_text(call)},
    }


def openai_call_pieces(call: PlannedCall, index: int) -> list[dict[str, Any]]:
    """The call as OpenAI streams it, one `delta.tool_calls[0]` each: id, type and name with
    empty arguments first, then the arguments in three fragments."""
    head = {"index": index, **openai_call(call)}
    head["function"] = {"name": call.name, "arguments": ""}
    arguments = arguments_text(call)
    step = max(1, len(arguments) // 3 + 1)
    rest = [
        {"index": index, "function": {"arguments": arguments[start : start + step]}}
        for start in range(0, len(arguments), step)
    ]
    return [head, *rest]
