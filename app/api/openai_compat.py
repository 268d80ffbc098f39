"""An OpenAI-compatible facade: `GET /v1/models` and `POST /v1/chat/completions`.

Any OpenAI client (the official SDK included) can point its base URL at `<service>/v1` and
use a personal API key as its key. `model` may be omitted or "default" (the admin's
settings); a name whose first segment (before the first "/") is a provider's names that
provider, and the rest is its model id (`openai/gpt-4o` is OpenAI's gpt-4o,
`openrouter/openai/gpt-4o` OpenRouter's `openai/gpt-4o`); any other name is a model of the
configured provider. Errors come in OpenAI's shape: `{"error": {"message", "type", "param",
"code"}}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sse_starlette import ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import SettingsDep, caller_is_admin, get_current_user
from app.api.streaming import sse_response
from app.core.config import LLMProvider
from app.models import ModelName
from app.services.llm import (
    PROVIDERS,
    Completion,
    LLMError,
    LLMServiceResult,
    StreamChunk,
    ToolCallDelta,
    UnsafeSchemaError,
    Usage,
    check_size,
    discover_models,
    discovery_service,
    get_llm_service_with_overrides,
    guard_schema_off_loop,
    load_effective_settings,
)
from app.services.llm.ledger import Caller, current_caller, set_json_reply
from app.services.llm.policy import may_call
from app.services.llm.tools import (
    CALL_ID_PATTERN,
    MAX_ARGUMENTS,
    MAX_DESCRIPTION,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    NAME_PATTERN,
)

PREFIX = "/v1"
router = APIRouter(
    prefix=PREFIX, tags=["openai-compatible"], dependencies=[Depends(get_current_user)]
)


class CalledFunction(BaseModel):
    """The function of a tool call the model made, as the client sends the call back."""

    name: str = Field(pattern=NAME_PATTERN)
    arguments: str = Field(max_length=MAX_ARGUMENTS)


class SentToolCall(BaseModel):
    """One of an assistant message's `tool_calls`, sent back in the conversation."""

    id: str = Field(pattern=CALL_ID_PATTERN)
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[SentToolCall] | None = Field(default=None, max_length=MAX_TOOL_CALLS)
    tool_call_id: str | None = Field(default=None, pattern=CALL_ID_PATTERN)

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a `tool` message needs the `tool_call_id` it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an `assistant` message carries `tool_calls`")
        return self


class FunctionSpec(BaseModel):
    """A tool's function: its name, what it does, and the JSON Schema of its arguments."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    parameters: dict[str, Any] | None = None
    """Checked by the schema guard in the route (`_unsafe_parameters`), size included."""
    strict: bool | None = None


class ToolSpec(BaseModel):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextFormat(BaseModel):
    type: Literal["text"]


class JSONObjectFormat(BaseModel):
    type: Literal["json_object"]


class JSONSchemaSpec(BaseModel):
    """OpenAI's `response_format.json_schema`: a name, and optionally the schema and strict."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=10_000)
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Relayed as is (the upstream compiles it), but never larger or deeper than a schema
        # /api/v1/llm/structured would accept.
        if value is not None:
            check_size(value)
        return value


class JSONSchemaFormat(BaseModel):
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JSONObjectFormat | JSONSchemaFormat, Field(discriminator="type")
]


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request this service relays; other fields are ignored."""

    model_config = ConfigDict(extra="allow")  # clients send many fields; see UNSUPPORTED

    model: ModelName | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolSpec] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> ChatCompletionRequest:
        names = [tool.function.name for tool in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tools: two tools have the same function name")
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice: only allowed when `tools` are sent")
        if isinstance(self.tool_choice, NamedToolChoice) and (
            self.tool_choice.function.name not in names
        ):
            raise ValueError("tool_choice: names a function that is not among `tools`")
        return self


_FORMATS = ("text", "json_object", "json_schema")

# Fields whose meaning this gateway cannot honour: refusing them beats a silently wrong answer.
# `functions` / `function_call` are OpenAI's deprecated forms of `tools` / `tool_choice`.
UNSUPPORTED = ("functions", "function_call", "logprobs", "audio")


def _unsupported(body: ChatCompletionRequest) -> str | None:
    extra = body.model_extra or {}
    asked = [name for name in UNSUPPORTED if extra.get(name) not in (None, False, [])]
    if extra.get("n") not in (None, 1):
        asked.append("n")
    if extra.get("parallel_tool_calls") is False:  # true is what every provider does anyway
        asked.append("parallel_tool_calls: false")
    return ", ".join(asked) or None


def openai_error(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    """A response in OpenAI's error shape."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(status_code=status, content=body)


def is_facade(request: Request) -> bool:
    """True for requests under the facade's prefix (their errors use OpenAI's shape)."""
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


PROVIDER_NAMES = frozenset(p.value for p in PROVIDERS)
# How long `GET /v1/models` waits for the active provider's listing.
LIST_DEADLINE = 3.0


def provider_and_model(name: str | None) -> tuple[str | None, str | None]:
    """The one rule for a requested model name (see the module's docstring): the provider
    and model it names, None for what the settings decide."""
    if name is None or name == "default":
        return None, None
    first, slash, rest = name.partition("/")
    if slash and first in PROVIDER_NAMES:
        # "lmstudio/" (nothing after the provider) is that provider's configured model.
        return first, rest or None
    return None, name


async def _resolve(name: str | None) -> LLMServiceResult:
    provider, model = provider_and_model(name)
    return await get_llm_service_with_overrides(provider, model)


def _response_format(
    chosen: LLMServiceResult, value: TextFormat | JSONObjectFormat | JSONSchemaFormat | None
) -> dict[str, Any] | None:
    if value is None:
        return None
    # LM Studio accepts only json_schema or text; json_object becomes "any JSON object".
    if isinstance(value, JSONObjectFormat) and chosen.provider is LLMProvider.LMSTUDIO:
        return {
            "type": "json_schema",
            "json_schema": {"name": "json_object", "schema": {"type": "object"}},
        }
    return value.model_dump(by_alias=True, exclude_none=True)


def _usage(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """`default`, the active provider's models as `<provider>/<id>`, then each provider's
    configured model, then each provider's configured embedding model.

    When the active provider cannot list its models, the answer is still 200 with what is
    configured, and `provider_errors` says why the rest is missing. Clients read this list
    as a catalogue to pick from: most (the official SDKs' `models.list()`, chat front ends
    that probe it when a connection is added) treat a non-200 as "this server is broken"
    and offer nothing, although `default` may still be answered (by a fallback provider,
    or once the provider is back). OpenAI's SDKs keep fields they do not know, so the
    extra one costs them nothing.
    """
    effective = await load_effective_settings()
    active = effective.provider
    ids = ["default"]
    errors: list[dict[str, str]] = []
    try:
        async with asyncio.timeout(LIST_DEADLINE):
            found = await discover_models(discovery_service(active))
        ids += [f"{active.value}/{m.id}" for m in found]
    except (LLMError, TimeoutError) as exc:
        if isinstance(exc, LLMError):
            message, kind = exc.message_for(admin=caller_is_admin(request)), exc.kind
        else:
            name = PROVIDERS[active].display_name
            message = f"{name} did not list its models within {LIST_DEADLINE:g} s"
            kind = "llm_timeout_error"
        errors.append({"provider": active.value, "message": message, "type": kind})
    ids += [f"{p.value}/{m}" for p in PROVIDERS if (m := effective.model_for(p))]
    ids += [f"{p.value}/{m}" for p in PROVIDERS if (m := effective.embedding_model_for(p))]
    if (caller := current_caller()) is not None and caller.scopes:
        ids = _callable(ids, caller, active.value, effective.model_for(active))
    body: dict[str, Any] = {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": 0, "owned_by": i.partition("/")[0]}
            for i in dict.fromkeys(ids)
        ],
    }
    if errors:
        body["provider_errors"] = errors
    return body


def _callable(ids: list[str], caller: Caller, active: str, default: str | None) -> list[str]:
    """The ids of `ids` the caller's policies allow ("default": the active provider's model)."""
    return [
        i
        for i in ids
        if may_call(caller, *((active, default or "") if i == "default" else i.split("/", 1)))
    ]


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, settings: SettingsDep) -> Response:
    """OpenAI's chat completions, relayed to the chosen provider (streaming included)."""
    if (unsupported := _unsupported(body)) is not None:
        return openai_error(
            400,
            f"This gateway does not support {unsupported} (yet); send the request without it",
            "invalid_request_error",
            "unsupported_parameter",
        )
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > settings.llm_max_tokens:
        return openai_error(
            400,
            f"max_tokens must be at most {settings.llm_max_tokens}",
            "invalid_request_error",
            "max_tokens_too_large",
        )
    if (unsafe := await _unsafe_parameters(body.tools)) is not None:
        return unsafe
    chosen = await _resolve(body.model)
    if body.response_format is not None and body.response_format.type != "text":
        set_json_reply()  # the usage ledger's kind: json, json_stream
    service = chosen.service
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    params: dict[str, Any] = {
        "temperature": body.temperature,
        "max_tokens": max_tokens,
        "response_format": _response_format(chosen, body.response_format),
        "seed": body.seed,
        "stop": body.stop,
    }
    if body.tools:
        params["tools"] = [tool.model_dump(exclude_none=True) for tool in body.tools]
        params["tool_choice"] = _dumped(body.tool_choice)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model_name = f"{chosen.provider.value}/{chosen.model}"
    if not body.stream:
        completion = await service.complete(messages, **params)
        reply = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": _answered_by(completion.provider, completion.model) or model_name,
            "choices": [
                {
                    "index": 0,
                    "message": _message(completion),
                    "finish_reason": completion.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(completion.usage),
        }
        return Response(orjson.dumps(reply), media_type="application/json")
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    frame = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model_name,
    }

    def event(choices: list[dict[str, Any]], **extra: Any) -> ServerSentEvent:
        return ServerSentEvent(orjson.dumps({**frame, "choices": choices, **extra}).decode())

    def render(chunk: StreamChunk) -> Iterator[ServerSentEvent]:
        # Only the last chunk says who answered (a fallback provider, the upstream's own
        # name for the model): the closing events carry it.
        frame["model"] = _answered_by(chunk.provider, chunk.model) or frame["model"]
        if chunk.text:
            yield event([{"index": 0, "delta": {"content": chunk.text}, "finish_reason": None}])
        if chunk.tool_calls:
            delta = {"tool_calls": [_call_delta(call) for call in chunk.tool_calls]}
            yield event([{"index": 0, "delta": delta, "finish_reason": None}])
        if chunk.finish_reason is not None:
            yield event([{"index": 0, "delta": {}, "finish_reason": chunk.finish_reason}])
            if include_usage:
                yield event([], usage=_usage(chunk.usage))

    def render_error(kind: str, message: str) -> ServerSentEvent:
        error = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return ServerSentEvent(orjson.dumps(error).decode())

    opening = event(
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    )
    return sse_response(
        service.stream_chunks(messages, **params),
        render,
        render_error,
        opening=[opening],
        closing=[ServerSentEvent("[DONE]")],
        sep="\n",
    )


# Agents send the same tools with every turn: the verdicts on the last sets of parameters
# schemas, keyed by a digest of them (a key of bounded size, whatever the schemas' size).
# Guarding 10 small schemas one by one cost ~190 µs a request, a remembered set ~5 µs.
RECENT_TOOLSETS = 256
_toolsets: dict[bytes, tuple[str, str] | None] = {}


async def _unsafe_parameters(tools: list[ToolSpec] | None) -> JSONResponse | None:
    """A 400 naming the first tool whose parameters schema the guard refuses (too large or
    deep, remote `$ref`, cycles, catastrophic patterns): the upstream compiles it."""
    if not tools:
        return None
    schemas = [tool.function.parameters for tool in tools]
    key = hashlib.blake2b(orjson.dumps(schemas), digest_size=16).digest()
    if key in _toolsets:
        verdict = _toolsets.pop(key)
    else:
        verdict = await _guarded(schemas)
    _toolsets[key] = verdict  # most recent last
    if len(_toolsets) > RECENT_TOOLSETS:
        del _toolsets[next(iter(_toolsets))]
    if verdict is None:
        return None
    where, reason = verdict
    return openai_error(400, f"{where}: {reason}", "invalid_request_error", param=where)


async def _guarded(schemas: list[dict[str, Any] | None]) -> tuple[str, str] | None:
    """Where and why the first unsafe schema is refused, or None when all pass."""
    for index, schema in enumerate(schemas):
        if schema is None:
            continue
        try:
            await guard_schema_off_loop(schema)
        except UnsafeSchemaError as exc:
            return f"tools.{index}.function.parameters", str(exc)
    return None


def _dumped(choice: str | NamedToolChoice | None) -> str | dict[str, Any] | None:
    return choice.model_dump() if isinstance(choice, NamedToolChoice) else choice


def _message(completion: Completion) -> dict[str, Any]:
    """The reply's `message`: its text, and the tool calls when the model asked for any
    (OpenAI then sends `content: null` unless the model also wrote text)."""
    if not completion.tool_calls:
        return {"role": "assistant", "content": completion.text}
    return {
        "role": "assistant",
        "content": completion.text or None,
        "tool_calls": [call.as_openai() for call in completion.tool_calls],
    }


def _call_delta(call: ToolCallDelta) -> dict[str, Any]:
    """A streamed tool call's piece as OpenAI streams it: id, type and name on its first."""
    delta: dict[str, Any] = {"index": call.index}
    function: dict[str, str] = {}
    if call.id is not None:
        delta["id"] = call.id
        delta["type"] = "function"
    if call.name is not None:
        function["name"] = call.name
    function["arguments"] = call.arguments
    delta["function"] = function
    return delta


def _answered_by(provider: str, model: str) -> str | None:
    """`<provider>/<model>` as the service reports who answered, when it says."""
    return f"{provider}/{model}" if provider and model else None


def facade_error_response(request: Request, exc: Exception) -> JSONResponse | None:
    """OpenAI-shaped responses for errors raised under the facade; None elsewhere."""
    if not is_facade(request):
        return None
    if isinstance(exc, LLMError):
        message = exc.message_for(admin=caller_is_admin(request))
        return openai_error(exc.status_code, message, exc.kind)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        # After "body"; pydantic adds the tag of a discriminated union ("json_schema").
        loc = [str(p) for p in first.get("loc", ())[1:]]
        where = ".".join(loc)
        message = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":  # its loc is the character position
            reason = (first.get("ctx") or {}).get("error", message)
            message = f"The request body is not valid JSON ({reason} at character {where})"
            return openai_error(400, message, "invalid_request_error")
        if loc[:1] == ["response_format"] and len(loc) > 1 and loc[1] in _FORMATS:
            where = ".".join(loc[:1] + loc[2:])
        message = f"{where or 'request body'}: {message}"
        return openai_error(400, message, "invalid_request_error", param=where or None)
    if isinstance(exc, StarletteHTTPException):
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        response = openai_error(exc.status_code, str(exc.detail), kind)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    return None
