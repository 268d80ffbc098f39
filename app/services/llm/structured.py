"""Structured output that works on LM Studio and everywhere else.

The ladder: strict `json_schema` → `json_object` → schema in the prompt. An upstream that
rejects a rung with HTTP 400 is asked again one rung lower, and the rung that worked is
remembered per (base URL, model) so the next call starts there. Every reply is validated
with Pydantic; an invalid one is retried with the validation error fed back, up to
`max_retries` times, and a reply cut at `max_tokens` is retried with a request for a
shorter one (and more room only if that is cut too). No request is ever sent twice: with
a pinned seed or at temperature 0 it would get the same reply, so a reply given again
verbatim is asked for afresh with another seed and some heat. Nothing unvalidated is ever
returned.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from app.core.config import get_settings
from app.services.llm.errors import LLMError, LLMUpstreamError, LLMValidationError
from app.services.llm.json_schema_guard import GuardedSchema, ReplyNotValidatedError, guard_schema
from app.services.llm.ledger import recording
from app.services.llm.protocol import Capabilities, LLMService, Message, ModelT

logger = logging.getLogger("app.services.llm")
T = TypeVar("T")

DEFAULT_MAX_TOKENS = 1024
MAX_RAW_IN_REPAIR = 1500
MAX_ERRORS_IN_REPAIR = 600
MAX_JSON_STARTS = 256
VARIED_TEMPERATURE = 0.7  # the least heat for a request that must get another reply
MAX_TEMPERATURE = 2.0  # the most the OpenAI API accepts


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
    provider: str = ""
    """Which provider answered (along a fallback chain, not always the first)."""
    model: str = ""


def _rungs(capabilities: Capabilities) -> tuple[StructuredMode, ...]:
    """The rungs this provider can climb: the prompt rung always, the others if it has them."""
    return tuple(
        mode
        for mode in LADDER
        if mode is StructuredMode.PROMPT
        or (mode is StructuredMode.JSON_SCHEMA and capabilities.json_schema)
        or (mode is StructuredMode.JSON_OBJECT and capabilities.json_object)
    )


def remembered_mode(base_url: str, model: str) -> StructuredMode | None:
    """The rung that last worked for this upstream and model, if any."""
    return _working_mode.get((base_url, model))


def forget_modes() -> None:
    """Forget every remembered rung (tests, or after an upstream upgrade)."""
    _working_mode.clear()


async def generate_structured(
    service: LLMService,
    prompt: str,
    response_model: type[ModelT],
    *,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> StructuredResult[ModelT]:
    """Ask `service` for an instance of `response_model`; raise LLMValidationError if none."""

    async def validate(value: Any) -> ModelT:
        return response_model.model_validate(value)

    with recording("structured"):  # its attempts are one call in the usage ledger
        return await _ladder(
            service,
            prompt,
            strict_schema(response_model),
            response_model.__name__,
            validate,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
        )


async def generate_structured_json(
    service: LLMService,
    prompt: str,
    schema: dict[str, Any] | GuardedSchema,
    *,
    name: str = "response",
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> StructuredResult[Any]:
    """Ask `service` for JSON valid against a JSON Schema.

    A plain `schema` is checked here with `guard_schema` (raising UnsafeSchemaError); a caller's
    schema should be checked before, off the event loop, with `guard_schema_off_loop`. Replies
    are validated in the validation threads within a time limit.
    """
    guarded = schema if isinstance(schema, GuardedSchema) else guard_schema(schema)

    async def validate(value: Any) -> Any:
        errors = await guarded.validate_off_loop(value)
        if errors:
            raise ValueError("; ".join(errors))
        return value

    with recording("structured"):  # its attempts are one call in the usage ledger
        return await _ladder(
            service,
            prompt,
            strict_json_schema(guarded.schema),
            name,
            validate,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
        )


async def _ladder(
    service: LLMService,
    prompt: str,
    schema: dict[str, Any],
    name: str,
    validate: Callable[[Any], Awaitable[T]],
    *,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    seed: int | None,
) -> StructuredResult[T]:
    key = (service.upstream, service.model)
    rungs = _rungs(service.capabilities)
    remembered = _working_mode.get(key)
    mode_index = rungs.index(remembered) if remembered in rungs else 0
    budget = 1 + service.max_retries
    asked = _Sampling(temperature, seed)
    room = max_tokens
    followup: list[Message] = []  # turns after the prompt: a repair, or a note on a cut
    vary = False  # whether the next request needs other sampling than the caller's
    invalid: set[str] = set()  # every invalid reply so far, to spot one given again verbatim
    sent: set[str] = set()  # every request so far, so that none is sent twice
    raw, detail, cuts, attempts = "", "", 0, 0

    while attempts < budget:
        mode = rungs[mode_index]
        messages = [*_messages(prompt, system, schema, mode), *followup]
        response_format = _response_format(mode, name, schema)
        sampling = asked.varied(attempts + 1) if vary else asked
        sampling = _unsent(sampling, attempts + 1, sent, messages, room, response_format)
        sent.add(_fingerprint(messages, sampling, room, response_format))
        try:
            completion = await service.complete(
                messages,
                temperature=sampling.temperature,
                max_tokens=room,
                response_format=response_format,
                seed=sampling.seed,
            )
        except LLMUpstreamError as exc:
            if exc.upstream_status == 400 and mode_index + 1 < len(rungs):
                logger.debug(
                    "llm structured: %s rejected %s (%s); trying %s",
                    service.display_name,
                    mode,
                    exc.message,
                    rungs[mode_index + 1],
                )
                mode_index += 1
                continue
            raise
        _working_mode[key] = mode
        attempts += 1
        raw = completion.text or completion.reasoning or ""
        try:
            value = await validate(extract_json(raw))
        except ReplyNotValidatedError as exc:
            # Asking again would only spend the same time on the next reply.
            raise LLMValidationError(
                f"{service.display_name} model '{service.model}': {exc}",
                provider=service.provider,
                raw_text=raw,
                attempts=attempts,
            ) from None
        except (ValueError, ValidationError) as exc:
            if completion.finish_reason == "length":
                # At pinned sampling more room only lets a looping reply loop longer; asking
                # for a shorter reply is what helps. Grow the room only if that is cut too.
                cuts += 1
                if cuts > 1:
                    room = await _more_room(service, room)
                followup, vary = [_cut_note(completion.usage.completion_tokens or room)], False
                detail = "the reply was cut off at max_tokens"
                logger.debug("llm structured: reply cut; asking for a shorter one (room %s)", room)
            else:
                detail = _summarise(exc)
                # A small model shown its own reply tends to copy it: when it already has,
                # ask afresh without it, with other sampling.
                vary = raw in invalid
                invalid.add(raw)
                followup = _repair(raw, detail, mode, schema, echo=not vary)
                logger.debug("llm structured: attempt %d invalid: %r", attempts, detail)
            continue
        return StructuredResult(
            value=value,
            attempts=attempts,
            mode=mode,
            raw_text=raw,
            provider=completion.provider or str(service.provider),
            model=completion.model or service.model,
        )

    raise LLMValidationError(
        f"{service.display_name} model '{service.model}' gave no valid "
        f"{name} in {attempts} attempts: {detail}",
        provider=service.provider,
        raw_text=raw,
        attempts=attempts,
    )


@dataclass(frozen=True, slots=True)
class _Sampling:
    """The sampling parameters of one request."""

    temperature: float | None
    seed: int | None

    def varied(self, attempt: int) -> _Sampling:
        """Sampling that gives another reply than this one: a new seed and some heat.

        The seed is derived from the caller's (when there is one), so runs stay reproducible.
        """
        seed = None if self.seed is None else self.seed + attempt
        return _Sampling(max(self.temperature or 0.0, VARIED_TEMPERATURE), seed)


def _unsent(
    sampling: _Sampling,
    attempt: int,
    sent: set[str],
    messages: list[Message],
    room: int | None,
    response_format: dict[str, Any] | None,
) -> _Sampling:
    """`sampling`, or sampling that makes this request differ from every one already sent.

    At a pinned seed or temperature 0 an identical request gets an identical reply, so
    sending it again would only waste the attempt.
    """
    if _fingerprint(messages, sampling, room, response_format) not in sent:
        return sampling
    sampling = sampling.varied(attempt)
    while _fingerprint(messages, sampling, room, response_format) in sent:
        temperature = sampling.temperature or 0.0
        if temperature >= MAX_TEMPERATURE:
            break  # nothing left to vary; unseeded at this heat, a repeat is a fresh draw
        # Only without a seed can this happen; the temperature is all that tells them apart.
        sampling = _Sampling(round(min(temperature + 0.05, MAX_TEMPERATURE), 2), sampling.seed)
    return sampling


def _fingerprint(
    messages: list[Message],
    sampling: _Sampling,
    room: int | None,
    response_format: dict[str, Any] | None,
) -> str:
    return json.dumps(
        [messages, sampling.temperature, sampling.seed, room, response_format], sort_keys=True
    )


async def _more_room(service: LLMService, room: int | None) -> int:
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
_JSON_START = re.compile(r"[{\[]")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON value in a reply, tolerating `<think>` blocks, code fences and chatter.

    Only the first MAX_JSON_STARTS brackets are tried as the start of the value: each try
    may read to the end of the text, so trying them all is quadratic (a hostile 60 KB reply
    of brackets took 10 s).
    """
    text = _THINK.sub("", text).strip()
    candidates = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    too_deep = False  # the C parser's own depth limit was hit
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        except RecursionError:
            too_deep = True
    decoder = json.JSONDecoder()
    for start in itertools.islice(_JSON_START.finditer(text), MAX_JSON_STARTS):
        try:
            return decoder.raw_decode(text, start.start())[0]
        except ValueError:
            continue
        except RecursionError:
            too_deep = True
    raise ValueError(
        "the reply nests too deeply" if too_deep else "the reply contains no JSON object"
    )


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
    prompt: str, system: str | None, schema: dict[str, Any], mode: StructuredMode
) -> list[Message]:
    if mode is StructuredMode.JSON_SCHEMA:
        # The server enforces the schema; repeating it here would double the prompt, and
        # small models copy numbers out of it into their answers.
        instruction = "Reply with one JSON object only, no prose."
    else:
        instruction = "Reply with one JSON object only, no prose, matching this JSON schema: "
        instruction += _compact(schema)
    if mode is StructuredMode.PROMPT:
        instruction += " Do not wrap it in code fences."
    return [
        {"role": "system", "content": f"{system}\n\n{instruction}" if system else instruction},
        {"role": "user", "content": prompt},
    ]


def _repair(
    raw: str, errors: str, mode: StructuredMode, schema: dict[str, Any], *, echo: bool
) -> list[Message]:
    """The turns that ask again after an invalid reply, with or without that reply."""
    turns: list[Message] = []
    if echo:
        turns.append({"role": "assistant", "content": raw[:MAX_RAW_IN_REPAIR]})
    text = f"{'That' if echo else 'Your previous'} reply was invalid: {errors}. Reply again "
    text += "with the corrected JSON object only"
    if mode is StructuredMode.JSON_SCHEMA:
        # Not in the system prompt on this rung, and a server may accept json_schema yet
        # ignore it: then this is the only place the model learns the expected shape.
        text += ", matching this JSON schema: " + _compact(schema)
    turns.append({"role": "user", "content": text + "."})
    return turns


def _cut_note(tokens: int | None) -> Message:
    after = f" after {tokens} tokens" if tokens else ""
    return {
        "role": "user",
        "content": f"Your previous reply was cut off{after} because it was too long. Reply "
        "again with a complete, much shorter JSON object; do not repeat items.",
    }


def _compact(schema: dict[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"))


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
