"""Generate text, structured JSON or a stream from the configured LLM (any authenticated user)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.deps import SettingsDep, get_current_user
from app.api.streaming import sse_response
from app.models import ModelName
from app.services.llm import (
    LLMServiceResult,
    StreamChunk,
    Usage,
    build_messages,
    generate_structured_json,
    get_llm_service_with_overrides,
    with_fallback,
)
from app.services.llm.json_schema_guard import (
    GuardedSchema,
    UnsafeSchemaError,
    check_size,
    guard_schema_off_loop,
)

router = APIRouter(prefix="/llm", tags=["llm"], dependencies=[Depends(get_current_user)])

Prompt = Annotated[str, StringConstraints(min_length=1, strip_whitespace=False)]


class GenerateRequest(BaseModel):
    """A prompt and, optionally, a provider/model for this call only."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    system: str | None = None
    provider: str | None = Field(default=None, max_length=32)
    model: ModelName | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be empty")
        return value


class UsagePublic(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class GenerateResponse(BaseModel):
    text: str
    provider: str
    model: str
    finish_reason: str | None
    usage: UsagePublic
    latency_ms: float


class StructuredRequest(GenerateRequest):
    """A prompt and the JSON Schema the reply must satisfy."""

    json_schema: dict[str, Any] = Field(alias="schema")
    schema_name: str = Field(default="response", pattern=r"^[a-zA-Z0-9_-]{1,64}$")

    @field_validator("json_schema")
    @classmethod
    def _small_enough(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The full check (see `_guarded`) runs off the event loop; this one is cheap.
        check_size(value)
        return value


async def _guarded(body: StructuredRequest) -> GuardedSchema:
    """The caller's schema checked by the guard; 422 naming what it refuses."""
    try:
        return await guard_schema_off_loop(body.json_schema)
    except UnsafeSchemaError as exc:
        raise RequestValidationError(
            [{"loc": ("body", "schema"), "msg": f"Value error, {exc}", "type": "value_error"}]
        ) from None


class StructuredResponse(BaseModel):
    data: Any
    provider: str
    model: str
    attempts: int
    mode: str
    latency_ms: float


def _usage(usage: Usage | None) -> UsagePublic:
    usage = usage or Usage()
    return UsagePublic(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


async def _service(body: GenerateRequest, settings: SettingsDep) -> LLMServiceResult:
    if body.max_tokens is not None and body.max_tokens > settings.llm_max_tokens:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "max_tokens"),
                    "msg": f"max_tokens must be at most {settings.llm_max_tokens} (LLM_MAX_TOKENS)",
                    "type": "less_than_equal",
                }
            ]
        )
    return await get_llm_service_with_overrides(body.provider, body.model)


@router.post("/generate", response_model=GenerateResponse)
async def generate(body: GenerateRequest, settings: SettingsDep) -> Response:
    """The reply to `prompt`, with the provider and model that answered, usage and latency."""
    chosen = await _service(body, settings)
    started = time.perf_counter()
    completion = await chosen.service.complete(
        build_messages(body.prompt, body.system),
        temperature=body.temperature,
        max_tokens=body.max_tokens,
    )
    reply = GenerateResponse(
        text=completion.text,
        provider=completion.provider or chosen.provider,
        model=completion.model or chosen.model,
        finish_reason=completion.finish_reason,
        usage=_usage(completion.usage),
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    # Already validated: serialised directly, not re-validated by FastAPI's response model.
    return Response(reply.model_dump_json(), media_type="application/json")


@router.post("/structured", response_model=StructuredResponse)
async def structured(body: StructuredRequest, settings: SettingsDep) -> Response:
    """JSON that validates against `schema`; 422 with the last raw reply if none did."""
    guarded = await _guarded(body)
    chosen = await _service(body, settings)
    started = time.perf_counter()
    result = await with_fallback(
        chosen.service,
        lambda service: generate_structured_json(
            service,
            body.prompt,
            guarded,
            name=body.schema_name,
            system=body.system,
            temperature=body.temperature,
            max_tokens=body.max_tokens,
        ),
    )
    reply = StructuredResponse(
        data=result.value,
        provider=result.provider or chosen.provider,
        model=result.model or chosen.model,
        attempts=result.attempts,
        mode=result.mode,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return Response(reply.model_dump_json(), media_type="application/json")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@router.post("/stream", response_class=EventSourceResponse)
async def stream(body: GenerateRequest, settings: SettingsDep) -> Response:
    """Server-sent events: `delta` per piece of text, then `done` (usage, latency) or `error`.

    Failures before the first piece answer with an HTTP error status instead.
    """
    chosen = await _service(body, settings)
    started = time.perf_counter()
    chunks = chosen.service.stream_chunks(
        build_messages(body.prompt, body.system),
        temperature=body.temperature,
        max_tokens=body.max_tokens,
    )

    def render(chunk: StreamChunk) -> Iterator[ServerSentEvent]:
        if chunk.text:
            yield ServerSentEvent(_json({"text": chunk.text}), event="delta")
        if chunk.finish_reason is not None:
            done = {
                "provider": chunk.provider or chosen.provider,
                "model": chunk.model or chosen.model,
                "finish_reason": chunk.finish_reason,
                "usage": _usage(chunk.usage).model_dump(),
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            yield ServerSentEvent(_json(done), event="done")

    def render_error(kind: str, message: str) -> ServerSentEvent:
        return ServerSentEvent(_json({"type": kind, "detail": message}), event="error")

    return sse_response(chunks, render, render_error)
