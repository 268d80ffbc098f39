"""Ideas tried on our structured-output ladder, as variants the accuracy benchmark can run.

Each variant is a context manager that changes `app.services.llm.structured` for the
duration of one run of ours (``--variant NAME`` in `benchmarks.structured_accuracy`), so an
idea can be measured beside the shipped ladder in the same run before it is kept or dropped.
The figures of every idea, kept or not, are in `benchmarks/structured_ideas.md` (appended to
RESULTS.md's structured section by `benchmarks.structured_accuracy.section`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from app.services.llm import structured
from app.services.llm.errors import LLMError
from app.services.llm.protocol import LLMService, Message, ModelT
from app.services.llm.structured import StructuredMode, StructuredResult

MessagesFn = Callable[[str, str | None, dict[str, Any], StructuredMode], list[Message]]


@contextmanager
def _messages_replaced(make: Callable[[MessagesFn], MessagesFn]) -> Iterator[None]:
    original = structured._messages
    structured._messages = make(original)
    try:
        yield
    finally:
        structured._messages = original


def _resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def field_hints(schema: dict[str, Any]) -> str:
    """The top-level fields in plain words: ``name (text); sentiment (one of: a, b)``."""
    parts = []
    for name, raw in (schema.get("properties") or {}).items():
        node = _resolve(raw, schema) if isinstance(raw, dict) else {}
        if "enum" in node:
            kind = "one of: " + ", ".join(str(v) for v in node["enum"])
        else:
            kind = {"string": "text", "integer": "whole number", "number": "number"}.get(
                str(node.get("type")), str(node.get("type", "value"))
            )
        bounds = [
            f"{word} {node[key]}"
            for key, word in (("minimum", "at least"), ("maximum", "at most"))
            if key in node
        ]
        parts.append(f"{name} ({', '.join([kind, *bounds])})")
    return "; ".join(parts)


@contextmanager
def hints() -> Iterator[None]:
    """The fields, their types, enum choices and bounds in plain words in the system prompt."""

    def make(original: MessagesFn) -> MessagesFn:
        def messages(
            prompt: str, system: str | None, schema: dict[str, Any], mode: StructuredMode
        ) -> list[Message]:
            out = original(prompt, system, schema, mode)
            if mode is StructuredMode.JSON_SCHEMA:
                content = f"{out[0]['content']} Fields: {field_hints(schema)}."
                out[0] = {**out[0], "content": content}
            return out

        return messages

    with _messages_replaced(make):
        yield


@contextmanager
def user_last() -> Iterator[None]:
    """No system message: the instruction follows the caller's prompt in the user turn."""

    def make(original: MessagesFn) -> MessagesFn:
        def messages(
            prompt: str, system: str | None, schema: dict[str, Any], mode: StructuredMode
        ) -> list[Message]:
            out = original(prompt, system, schema, mode)
            return [{"role": "user", "content": f"{prompt}\n\n{out[0]['content']}"}]

        return messages

    with _messages_replaced(make):
        yield


@contextmanager
def exact() -> Iterator[None]:
    """Ask for values copied exactly from the text, each as short as it can be."""

    def make(original: MessagesFn) -> MessagesFn:
        def messages(
            prompt: str, system: str | None, schema: dict[str, Any], mode: StructuredMode
        ) -> list[Message]:
            out = original(prompt, system, schema, mode)
            note = (
                " Take each value from the text exactly as written, as short as it can be; "
                "compute any number the question asks for."
            )
            out[0] = {**out[0], "content": out[0]["content"] + note}
            return out

        return messages

    with _messages_replaced(make):
        yield


_EXAMPLE: list[Message] = [
    {"role": "user", "content": "Extract the name and age: 'Ann Weber turned 29 in May.'"},
    {"role": "assistant", "content": json.dumps({"name": "Ann Weber", "age": 29})},
]


@contextmanager
def example() -> Iterator[None]:
    """One fixed worked example (a user turn and its short JSON answer) before the prompt."""

    def make(original: MessagesFn) -> MessagesFn:
        def messages(
            prompt: str, system: str | None, schema: dict[str, Any], mode: StructuredMode
        ) -> list[Message]:
            out = original(prompt, system, schema, mode)
            return [out[0], *_EXAMPLE, *out[1:]]

        return messages

    with _messages_replaced(make):
        yield


VARIANTS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "hints": hints,
    "user-last": user_last,
    "exact": exact,
    "example": example,
}


CHECK_NOTE = (
    "Check each value of your JSON object against my message above and correct any "
    "mistake. Reply with the corrected JSON object only."
)


@contextmanager
def self_check() -> Iterator[None]:
    """After a valid reply, one more turn: check it against the prompt and correct it.

    The corrected object is kept only if it validates; otherwise the first one stands.
    """
    from benchmarks import structured_quality

    original = structured_quality.generate_structured

    async def checked(
        service: LLMService, prompt: str, response_model: type[ModelT], **kwargs: Any
    ) -> StructuredResult[ModelT]:
        first = await original(service, prompt, response_model, **kwargs)
        schema = structured.strict_schema(response_model)
        messages = [
            *structured._messages(prompt, kwargs.get("system"), schema, first.mode),
            {"role": "assistant", "content": first.raw_text},
            {"role": "user", "content": CHECK_NOTE},
        ]
        try:
            completion = await service.complete(
                messages,
                temperature=kwargs.get("temperature"),
                max_tokens=kwargs.get("max_tokens"),
                response_format=structured._response_format(
                    first.mode, response_model.__name__, schema
                ),
                seed=kwargs.get("seed"),
            )
            value = response_model.model_validate(structured.extract_json(completion.text))
        except (LLMError, ValueError, ValidationError):
            return first
        return replace(first, value=value, attempts=first.attempts + 1, raw_text=completion.text)

    structured_quality.generate_structured = checked  # type: ignore[assignment]
    try:
        yield
    finally:
        structured_quality.generate_structured = original


VARIANTS["self-check"] = self_check


DRAFT_TOKENS = 48


@contextmanager
def draft() -> Iterator[None]:
    """First a short answer in words (no format), then the ladder with that answer beside it.

    A grammar makes a small model commit to a field's first token at once (it often takes
    the first enum choice); a few words first let it answer the question before the format.
    """
    from benchmarks import structured_quality

    original = structured_quality.generate_structured

    async def drafted(
        service: LLMService, prompt: str, response_model: type[ModelT], **kwargs: Any
    ) -> StructuredResult[ModelT]:
        try:
            words = await service.complete(
                [{"role": "user", "content": f"{prompt}\nAnswer in one short sentence."}],
                temperature=kwargs.get("temperature"),
                max_tokens=DRAFT_TOKENS,
                seed=kwargs.get("seed"),
            )
            note = (words.text or "").strip()
        except LLMError:
            note = ""
        augmented = f"{prompt}\n\nA first answer in words: {note}" if note else prompt
        result = await original(service, augmented, response_model, **kwargs)
        return replace(result, attempts=result.attempts + 1)

    structured_quality.generate_structured = drafted  # type: ignore[assignment]
    try:
        yield
    finally:
        structured_quality.generate_structured = original


VARIANTS["draft"] = draft
