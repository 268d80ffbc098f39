"""The structured-output ladder, retries and repair, against the stand-in server."""

from __future__ import annotations

from enum import StrEnum

import pytest
from pydantic import BaseModel, Field

from app.services.llm import LLMValidationError, get_llm_service_with_overrides
from app.services.llm.providers.openai_compatible import OpenAICompatibleService
from app.services.llm.structured import (
    StructuredMode,
    extract_json,
    generate_structured,
    remembered_mode,
    strict_schema,
)
from tests.conftest import LLMEnv
from tests.upstream import StandInServer

MODEL = "llama-3.2-3b-instruct"


class CodeResponse(BaseModel):
    language: str
    code: str
    explanation: str


class Priority(StrEnum):
    LOW = "low"
    HIGH = "high"


class Step(BaseModel):
    title: str
    minutes: int = Field(ge=1, le=120)


class Plan(BaseModel):
    name: str
    priority: Priority
    steps: list[Step] = Field(min_length=1)
    note: str | None = None


async def service(llm_env: LLMEnv, max_retries: int = 3) -> OpenAICompatibleService:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=max_retries)
    result = await get_llm_service_with_overrides(provider="lmstudio")
    assert isinstance(result.service, OpenAICompatibleService)
    return result.service


def formats(upstream: StandInServer) -> list[str | None]:
    return [(r.json.get("response_format") or {}).get("type") for r in upstream.chat_requests]


async def test_json_schema_first_and_strict(llm_env: LLMEnv, upstream: StandInServer) -> None:
    llm = await service(llm_env)
    plan = await llm.get_structured_response("Plan a picnic", Plan)
    assert isinstance(plan, Plan)
    sent = upstream.chat_requests[0].json["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Plan"
    assert sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"] == strict_schema(Plan)
    assert formats(upstream) == ["json_schema"]


async def test_ladder_falls_back_and_remembers_the_rung(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    upstream.json_schema_supported = False  # and json_object is rejected, as LM Studio does
    upstream.reply_json({"language": "python", "code": "print(1)", "explanation": "prints"})
    result = await generate_structured(llm, "hello world in Python", CodeResponse)
    assert result.value.language == "python"
    assert result.mode is StructuredMode.PROMPT
    assert result.attempts == 1
    assert formats(upstream) == ["json_schema", "json_object", None]
    prompt_rung = upstream.chat_requests[2].json["messages"]
    assert '"required":["language","code","explanation"]' in prompt_rung[0]["content"]
    assert remembered_mode(llm.base_url, MODEL) is StructuredMode.PROMPT

    upstream.reply_json({"language": "go", "code": "x", "explanation": "y"})
    again = await generate_structured(llm, "again", CodeResponse)
    assert again.value.language == "go"
    assert formats(upstream) == ["json_schema", "json_object", None, None]


async def test_json_object_rung_is_used_where_supported(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    upstream.json_schema_supported = False
    upstream.json_object_supported = True
    upstream.reply_json({"language": "c", "code": "main", "explanation": "e"})
    result = await generate_structured(llm, "hello", CodeResponse)
    assert result.mode is StructuredMode.JSON_OBJECT
    assert formats(upstream) == ["json_schema", "json_object"]


async def test_invalid_replies_are_repaired_with_the_error_fed_back(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, max_retries=3)
    upstream.reply_json({"name": "x", "priority": "urgent", "steps": []})
    upstream.invalid_json(kind="prose")
    result = await generate_structured(llm, "Plan a picnic", Plan)
    assert result.attempts == 3
    assert isinstance(result.value, Plan)
    repair = upstream.chat_requests[1].json["messages"]
    assert repair[-2]["role"] == "assistant"
    assert repair[-2]["content"] == '{"name": "x", "priority": "urgent", "steps": []}'
    assert repair[-1]["content"].startswith("That reply was invalid: priority: Input should be")
    assert "steps: List should have at least 1 item" in repair[-1]["content"]


async def test_numeric_bounds_the_grammar_cannot_enforce_are_caught(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    upstream.reply_json({"name": "n", "priority": "low", "steps": [{"title": "t", "minutes": 0}]})
    result = await generate_structured(llm, "Plan", Plan)
    assert result.attempts == 2
    assert result.value.steps[0].minutes >= 1
    assert "steps.0.minutes" in upstream.chat_requests[1].json["messages"][-1]["content"]


async def test_never_returns_an_unvalidated_object(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, max_retries=2)
    upstream.invalid_json(times=None, kind="wrong_shape")
    with pytest.raises(LLMValidationError) as caught:
        await llm.get_structured_response("Plan", Plan)
    assert caught.value.attempts == 3
    assert len(upstream.chat_requests) == 3
    assert caught.value.raw_text
    assert caught.value.message.startswith(
        f"LM Studio model '{MODEL}' gave no valid Plan in 3 attempts: "
    )
    assert caught.value.status_code == 422


async def test_reply_cut_at_max_tokens_is_retried_with_more_room(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    upstream.reply_truncated('{"language": "py')
    result = await generate_structured(llm, "hello", CodeResponse, max_tokens=100)
    assert result.attempts == 2
    assert [r.json.get("max_tokens") for r in upstream.chat_requests] == [100, 200]
    assert upstream.chat_requests[1].json["messages"][-1]["role"] == "user"
    assert len(upstream.chat_requests[1].json["messages"]) == 2  # no repair chatter


async def test_json_in_reasoning_content_with_empty_content(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    upstream.reply_reasoning('{"language": "rust", "code": "fn main(){}", "explanation": "e"}')
    value = await llm.get_structured_response("hello", CodeResponse)
    assert value.language == "rust"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('<think>maybe {"a": 0}</think>\n{"a": 1}', {"a": 1}),
        ('Sure! Here it is: {"a": [1, 2]} Hope that helps.', {"a": [1, 2]}),
        ("<think>never closed {", None),
        ("no json here", None),
    ],
)
def test_extract_json(text: str, expected: object) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="no JSON"):
            extract_json(text)
    else:
        assert extract_json(text) == expected


def test_strict_schema_requires_every_property_and_forbids_extras() -> None:
    schema = strict_schema(Plan)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["name", "priority", "steps", "note"]
    step = schema["$defs"]["Step"]
    assert step["additionalProperties"] is False
    assert step["properties"]["minutes"]["minimum"] == 1
