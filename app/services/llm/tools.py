"""Tool calling in OpenAI's vocabulary, which every wire translates from and to: the bounds
on what a caller may send, tools made from Pydantic models, and reading the tool calls an
upstream sends back (a malformed one is the upstream's fault: a ValueError naming it, which
a wire turns into its 502)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

from app.services.llm.errors import LLMInvalidRequestError, LLMValidationError
from app.services.llm.protocol import Capabilities, Message, ToolCall, ToolCallDelta

MAX_TOOLS = 128
"""Tools one request may offer (OpenAI's own limit)."""
MAX_TOOL_CALLS = 128
"""Tool calls one assistant message may carry, sent or received."""
MAX_DESCRIPTION = 10_000
"""Characters of a tool's description."""
MAX_CALL_ID = 256
"""Characters of a tool call's id (OpenAI's are ~30, Anthropic's via OpenRouter ~40)."""
MAX_ARGUMENTS = 256 * 1024
"""Characters of one tool call's arguments, sent or received."""
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A function's name, as OpenAI allows it (Bedrock and Ollama accept the same)."""
CALL_ID_PATTERN = r"^[\x21-\x7e]{1,256}$"
"""A tool call's id: printable ASCII without spaces."""

if TYPE_CHECKING:
    from app.services.llm.calls import PromptCalls, ProviderService

_NAME = re.compile(NAME_PATTERN)
CHOICES = ("auto", "none", "required")
ToolChoice = str | dict[str, Any]


def check_tools_supported(
    capabilities: Capabilities, name: str, provider: str, model: str, choice: ToolChoice | None
) -> None:
    """Raise a 400 naming the provider and model when it cannot honour tools or `choice`
    (refusing beats silently dropping what the caller asked for)."""
    if not capabilities.tools:
        raise LLMInvalidRequestError(
            f"{name} cannot call tools (model {model}); send the request without `tools`",
            provider=provider,
        )
    if not capabilities.forced_tool_choice and (choice == "required" or chosen_name(choice)):
        raise LLMInvalidRequestError(
            f"{name} has no way to force a tool call (model {model}): its API has no "
            "`tool_choice`; send `auto` or `none`",
            provider=provider,
        )


async def check_trained_for_tools(service: ProviderService) -> None:
    """A 400 naming the model when the provider's discovery says it was not trained for
    tool use (LM Studio would prompt it with a generic format it was never taught, and its
    "calls" would mostly arrive as text). Nothing when discovery fails or does not say."""
    from app.services.llm.calls import discover_models
    from app.services.llm.errors import LLMError

    try:
        models = await discover_models(service)
    except LLMError:
        return  # the call itself will say what is wrong with the upstream
    if any(m.id == service.model and m.tool_use is False for m in models):
        raise LLMInvalidRequestError(
            f"{service.display_name} reports that model {service.model} was not trained for "
            "tool use: load a model trained for it (LM Studio marks them with the tool-use "
            "badge), or send the request without `tools`",
            provider=service.provider,
        )


def tool_from_model(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAI tool whose name is the model's class name, whose description is its
    docstring and whose parameters are its JSON Schema."""
    name = model.__name__
    if not _NAME.match(name):
        raise ValueError(f"the tool name {name!r} does not match {NAME_PATTERN}")
    schema = model.model_json_schema()
    description = schema.pop("description", None) or ""
    schema.pop("title", None)
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if description:
        function["description"] = description[:MAX_DESCRIPTION]
    return {"type": "function", "function": function}


def tool_names(tools: Sequence[dict[str, Any]] | None) -> list[str]:
    """The function names of OpenAI-shaped tools."""
    return [str(tool["function"]["name"]) for tool in tools or ()]


def chosen_name(choice: ToolChoice | None) -> str | None:
    """The function a `tool_choice` names (`{"type": "function", "function": {"name"}}`)."""
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return name if isinstance(name, str) else None
    return None


def new_call_id() -> str:
    """An id for a tool call whose upstream gave none (Ollama's older servers)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def arguments_text(value: object, where: str) -> str:
    """A call's arguments as OpenAI sends them (JSON text of an object), from an object
    (Ollama, Bedrock) or from text (OpenAI's wire); ValueError when it is neither."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        text = orjson.dumps(value).decode()
    else:
        raise ValueError(f"{where} has arguments that are not a JSON object")
    if len(text) > MAX_ARGUMENTS:
        raise ValueError(f"{where} has arguments over {MAX_ARGUMENTS} characters")
    return text


def checked_call(call_id: object, name: object, arguments: object, where: str) -> ToolCall:
    """A tool call read from an upstream; ValueError naming what is wrong with it."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where} names no valid function")
    if call_id is None or call_id == "":
        call_id = new_call_id()
    if not isinstance(call_id, str) or len(call_id) > MAX_CALL_ID:
        raise ValueError(f"{where} has an id that is not a string of at most {MAX_CALL_ID}")
    return ToolCall(call_id, name, arguments_text(arguments, where))


def openai_tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    """The `tool_calls` of an OpenAI chat completion's message."""
    calls = message.get("tool_calls")
    if calls is None:
        return ()
    if not isinstance(calls, list) or len(calls) > MAX_TOOL_CALLS:
        raise ValueError(f"`tool_calls` that is not a list of at most {MAX_TOOL_CALLS}")
    found = []
    for index, call in enumerate(calls):
        where = f"tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise ValueError(f"{where} without a `function`")
        found.append(
            checked_call(call.get("id"), function.get("name"), function.get("arguments"), where)
        )
    return tuple(found)


def openai_tool_call_deltas(delta: dict[str, Any]) -> tuple[ToolCallDelta, ...]:
    """The `tool_calls` fragments of an OpenAI stream chunk's delta."""
    calls = delta.get("tool_calls")
    if calls is None:
        return ()
    if not isinstance(calls, list):
        raise ValueError("a `delta.tool_calls` that is not a list")
    found = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            raise ValueError("a streamed tool call that is not an object")
        # Some OpenAI-compatible servers (Gemini's) leave `index` out: their position then.
        index = call.get("index", position)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_TOOL_CALLS:
            raise ValueError("a streamed tool call without a valid `index`")
        function = call.get("function") or {}
        if not isinstance(function, dict):
            raise ValueError(f"streamed tool call {index} has a `function` that is no object")
        call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
        if call_id is not None and (not isinstance(call_id, str) or len(call_id) > MAX_CALL_ID):
            raise ValueError(f"streamed tool call {index} has an invalid id")
        if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
            raise ValueError(f"streamed tool call {index} names no valid function")
        if arguments is not None and not isinstance(arguments, str):
            raise ValueError(f"streamed tool call {index} has arguments that are not text")
        found.append(ToolCallDelta(index, call_id or None, name or None, arguments or ""))
    return tuple(found)


def whole_call_deltas(calls: Sequence[ToolCall], first_index: int = 0) -> tuple[ToolCallDelta, ...]:
    """Whole calls (Ollama streams them so) as one delta each, numbered from `first_index`."""
    return tuple(
        ToolCallDelta(first_index + i, call.id, call.name, call.arguments)
        for i, call in enumerate(calls)
    )


def calls_in(message: Message) -> list[dict[str, Any]]:
    """The OpenAI-shaped tool calls an assistant message of the conversation carries."""
    calls = message.get("tool_calls")
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def call_names(messages: Sequence[Message]) -> dict[str, str]:
    """Each tool call id of the conversation's assistant messages → the function called
    (a `tool` message names only the id; Ollama wants the name)."""
    names: dict[str, str] = {}
    for message in messages:
        for call in calls_in(message):
            function = call.get("function")
            if isinstance(function, dict) and isinstance(call.get("id"), str):
                names[call["id"]] = str(function.get("name", ""))
    return names


def parsed_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped call's arguments as an object (Ollama and Bedrock want one); an
    unparsable text becomes an empty object rather than a request the upstream refuses."""
    function = call.get("function")
    raw = function.get("arguments") if isinstance(function, dict) else None
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class ToolUse:
    """A tool call the model asked for, its arguments validated as the tool's model."""

    id: str
    name: str
    arguments: BaseModel


async def get_tool_calls(
    service: PromptCalls,
    prompt: str,
    tools: Sequence[type[BaseModel]],
    *,
    system: str | None = None,
    tool_choice: str = "auto",
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> list[ToolUse]:
    """The tools `service`'s model asks to call for `prompt` (see `PromptCalls.get_tool_calls`)."""
    from app.services.llm.calls import build_messages

    if not tools or len(tools) > MAX_TOOLS:
        raise ValueError(f"give between 1 and {MAX_TOOLS} tools")
    by_name = {model.__name__: model for model in tools}
    if len(by_name) != len(tools):
        raise ValueError("two tools have the same class name (the function's name)")
    choice: ToolChoice = tool_choice
    if tool_choice not in CHOICES:
        if tool_choice not in by_name:
            raise ValueError(f"tool_choice {tool_choice!r} names none of the tools")
        choice = {"type": "function", "function": {"name": tool_choice}}
    completion = await service.complete(
        build_messages(prompt, system),
        temperature=temperature,
        max_tokens=max_tokens,
        tools=[tool_from_model(model) for model in tools],
        tool_choice=choice,
    )
    found = []
    for call in completion.tool_calls:
        model = by_name.get(call.name)
        if model is None:
            raise LLMValidationError(
                f"The model called {call.name!r}, which is none of the tools offered",
                provider=completion.provider,
                raw_text=call.arguments,
                attempts=1,
            )
        try:
            arguments = model.model_validate_json(call.arguments or "{}")
        except ValidationError as exc:
            raise LLMValidationError(
                f"The model's arguments for {call.name} do not validate: "
                f"{exc.error_count()} errors, first: {exc.errors()[0]['msg']}",
                provider=completion.provider,
                raw_text=call.arguments,
                attempts=1,
            ) from None
        found.append(ToolUse(call.id, call.name, arguments))
    return found
