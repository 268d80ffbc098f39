"""Structured output that works on LM Studio and everywhere else.

The ladder: strict `json_schema` → `json_object` → schema in the prompt. An upstream that
rejects a rung with HTTP 400 is asked again one rung lower, and the rung that worked is
remembered per (base URL, model) so the next call starts there. Every reply is validated
with Pydantic; an invalid one is retried with the validation error fed back, up to
`max_retries` times, and a reply cut at `max_tokens` is retried with more room. Nothing
unvalidated is ever returned.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from app.core.config import get_settings
from app.services.llm.errors import LLMError, LLMUpstreamError, LLMValidationError
from app.services.llm.protocol import Message, ModelT

if TYPE_CHECKING:
    from app.services.llm.providers.openai_compatible import OpenAICompatibleService

logger = logging.getLogger("app.services.llm")
T = TypeVar("T")

DEFAULT_MAX_TOKENS = 1024
MAX_RAW_IN_REPAIR = 1500
MAX_ERRORS_IN_REPAIR = 600


class StructuredMode(StrEnum):
    """The rungs of the ladder, best first."""

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    PROMPT = "prompt"


LADDER = (StructuredMode.JSON_SCHEMA, StructuredMode.JSON_OBJECT, StructuredMode.PROMPT)
_working_mode: dict[tuple[str, str], StructuredMode] = {}


@dataclass(frozen=True, slots=True)
class StructuredResult(Generic[T]):
    """A validated value and how it was obtained."""

    value: T
    attempts: int
    mode: StructuredMode
    raw_text: str


def remembered_mode(base_url: str, model: str) -> StructuredMode | None:
    """The rung that last worked for this upstream and model, if any."""
    return _working_mode.get((base_url, model))


def forget_modes() -> None:
    """Forget every remembered rung (tests, or after an upstream upgrade)."""
    _working_mode.clear()


async def generate_structured(
    service: OpenAICompatibleService,
    prompt: str,
    response_model: type[ModelT],
    *,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> StructuredResult[ModelT]:
    """Ask `service` for an instance of `response_model`; raise LLMValidationError if none."""
    return await _ladder(
        service,
        prompt,
        strict_schema(response_model),
        response_model.__name__,
        response_model.model_validate,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
    )


async def generate_structured_json(
    service: OpenAICompatibleService,
    prompt: str,
    schema: dict[str, Any],
    *,
    name: str = "response",
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> StructuredResult[Any]:
    """Ask `service` for JSON valid against a JSON Schema (checked with `jsonschema`)."""
    validator = Draft202012Validator(schema)

    def validate(value: Any) -> Any:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            raise ValueError(
                "; ".join(
                    f"{'.'.join(str(p) for p in err.absolute_path) or 'value'}: {err.message}"
                    for err in errors[:10]
                )
            )
        return value

    return await _ladder(
        service,
        prompt,
        strict_json_schema(schema),
        name,
        validate,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
    )


async def _ladder(
    service: OpenAICompatibleService,
    prompt: str,
    schema: dict[str, Any],
    name: str,
    validate: Callable[[Any], T],
    *,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    seed: int | None,
) -> StructuredResult[T]:
    key = (service.base_url, service.model)
    mode_index = LADDER.index(_working_mode.get(key, StructuredMode.JSON_SCHEMA))
    budget = 1 + service.config.max_retries
    room = max_tokens
    repair: tuple[str, str] | None = None  # (last raw reply, its errors)
    raw, attempts = "", 0

    while attempts < budget:
        mode = LADDER[mode_index]
        messages = _messages(prompt, system, schema, mode, repair)
        try:
            completion = await service.complete(
                messages,
                temperature=temperature,
                max_tokens=room,
                response_format=_response_format(mode, name, schema),
                seed=seed,
            )
        except LLMUpstreamError as exc:
            if exc.upstream_status == 400 and mode_index + 1 < len(LADDER):
                logger.debug(
                    "llm structured: %s rejected %s (%s); trying %s",
                    service.display_name,
                    mode,
                    exc.message,
                    LADDER[mode_index + 1],
                )
                mode_index += 1
                continue
            raise
        _working_mode[key] = mode
        attempts += 1
        raw = completion.text or completion.reasoning or ""
        try:
            value = validate(extract_json(raw))
        except (ValueError, ValidationError) as exc:
            if completion.finish_reason == "length":
                room = await _more_room(service, room)
                logger.debug("llm structured: reply cut at max_tokens; retrying with %d", room)
                repair = None
            else:
                repair = (raw, _summarise(exc))
                logger.debug("llm structured: attempt %d invalid: %s", attempts, repair[1])
            continue
        return StructuredResult(value=value, attempts=attempts, mode=mode, raw_text=raw)

    detail = repair[1] if repair else "the reply was cut off at max_tokens"
    raise LLMValidationError(
        f"{service.display_name} model '{service.model}' gave no valid "
        f"{name} in {attempts} attempts: {detail}",
        provider=service.provider,
        raw_text=raw,
        attempts=attempts,
    )


async def _more_room(service: OpenAICompatibleService, room: int | None) -> int:
    """Twice the token budget, within LLM_MAX_TOKENS and the model's context window."""
    wanted = min(2 * (room or DEFAULT_MAX_TOKENS), get_settings().llm_max_tokens)
    try:
        limit = await service.context_length()
    except LLMError:
        limit = None
    if limit:
        wanted = min(wanted, max(limit // 2, 1))
    return wanted


def strict_schema(response_model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema made strict (see `strict_json_schema`)."""
    return strict_json_schema(response_model.model_json_schema())


def strict_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` where every object requires all its properties and allows no others.

    Strict schemas are what OpenAI's structured outputs require and what grammar-based
    servers (LM Studio, llama.cpp) enforce best. Replies are still validated against the
    caller's own schema or model.
    """
    schema = copy.deepcopy(schema)

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and isinstance(node.get("properties"), dict):
                node.setdefault("additionalProperties", False)
                node["required"] = list(node["properties"])
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for item in node:
                tighten(item)

    tighten(schema)
    return schema


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON value in a reply, tolerating `<think>` blocks, code fences and chatter."""
    text = _THINK.sub("", text).strip()
    candidates = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    for index, char in enumerate(text):
        if char in "{[":
            try:
                return decoder.raw_decode(text, index)[0]
            except ValueError:
                continue
    raise ValueError("the reply contains no JSON object")


def _response_format(
    mode: StructuredMode, name: str, schema: dict[str, Any]
) -> dict[str, Any] | None:
    if mode is StructuredMode.JSON_SCHEMA:
        safe_name = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "response"
        return {
            "type": "json_schema",
            "json_schema": {"name": safe_name, "strict": True, "schema": schema},
        }
    if mode is StructuredMode.JSON_OBJECT:
        return {"type": "json_object"}
    return None


def _messages(
    prompt: str,
    system: str | None,
    schema: dict[str, Any],
    mode: StructuredMode,
    repair: tuple[str, str] | None,
) -> list[Message]:
    instruction = (
        "Reply with one JSON object only, no prose, matching this JSON schema: "
        + json.dumps(schema, separators=(",", ":"))
    )
    if mode is StructuredMode.PROMPT:
        instruction += " Do not wrap it in code fences."
    messages: list[Message] = [
        {"role": "system", "content": f"{system}\n\n{instruction}" if system else instruction},
        {"role": "user", "content": prompt},
    ]
    if repair is not None:
        raw, errors = repair
        messages.append({"role": "assistant", "content": raw[:MAX_RAW_IN_REPAIR]})
        messages.append(
            {
                "role": "user",
                "content": f"That reply was invalid: {errors}. Reply again with the corrected "
                "JSON object only.",
            }
        )
    return messages


def _summarise(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
            for err in exc.errors()
        ]
        text = "; ".join(parts)
    else:
        text = str(exc)
    return text[:MAX_ERRORS_IN_REPAIR]
