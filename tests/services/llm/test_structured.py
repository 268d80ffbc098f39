"""The structured-output ladder, retries and repair, against the stand-in server."""

from __future__ import annotations

import json
from enum import StrEnum

import pytest
from pydantic import BaseModel, Field

from app.services.llm import LLMValidationError, ProviderService, get_llm_service_with_overrides
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


async def service(llm_env: LLMEnv, max_retries: int = 3, **settings: object) -> ProviderService:
    llm_env.set(lmstudio_model=MODEL, lmstudio_max_retries=max_retries, **settings)
    result = await get_llm_service_with_overrides(provider="lmstudio")
    assert isinstance(result.service, ProviderService)
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


async def test_reply_cut_at_max_tokens_asks_for_a_shorter_reply_in_the_same_room(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env)
    upstream.reply_truncated('{"language": "py')
    result = await generate_structured(
        llm, "hello", CodeResponse, max_tokens=100, temperature=0, seed=42
    )
    assert result.attempts == 2
    assert [r.json.get("max_tokens") for r in upstream.chat_requests] == [100, 100]
    retry = upstream.chat_requests[1].json
    assert [m["role"] for m in retry["messages"]] == ["system", "user", "user"]
    note = retry["messages"][-1]["content"]
    assert note.startswith("Your previous reply was cut off after ")
    assert "much shorter JSON object" in note
    assert '{"language": "py' not in json.dumps(retry["messages"])  # the cut reply is not sent
    assert (retry["seed"], retry["temperature"]) == (42, 0)


async def test_reply_cut_again_gets_more_room_and_never_an_identical_request(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, max_retries=5, llm_max_tokens=200)
    upstream.reply_truncated('{"language": "py', times=None)
    with pytest.raises(LLMValidationError) as caught:
        await generate_structured(llm, "hello", CodeResponse, max_tokens=100)
    assert caught.value.attempts == 6
    assert caught.value.message.endswith("the reply was cut off at max_tokens")
    sent = upstream.chat_requests
    assert [r.json.get("max_tokens") for r in sent] == [100, 100, 200, 200, 200, 200]
    # Capped at LLM_MAX_TOKENS, the room can no longer tell the requests apart; unseeded,
    # only the temperature can.
    assert [r.json.get("temperature") for r in sent] == [None, None, None, 0.7, 0.75, 0.8]
    assert len({r.body for r in sent}) == len(sent)


async def test_a_repeated_invalid_reply_is_asked_for_afresh_with_other_sampling(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, max_retries=3)
    too_long = {"name": "n", "priority": "low", "steps": [{"title": "t", "minutes": 500}]}
    upstream.reply_json(too_long)
    upstream.reply_json(too_long)  # the model copies its reply from the repair turn
    result = await generate_structured(llm, "Plan", Plan, temperature=0, seed=42)
    assert result.attempts == 3
    first, repair, fresh = (r.json for r in upstream.chat_requests)
    assert (first["seed"], first["temperature"]) == (repair["seed"], repair["temperature"])
    assert [m["role"] for m in repair["messages"]] == ["system", "user", "assistant", "user"]
    assert [m["role"] for m in fresh["messages"]] == ["system", "user", "user"]
    assert fresh["messages"][-1]["content"].startswith(
        "Your previous reply was invalid: steps.0.minutes: Input should be less than or equal"
    )
    assert fresh["seed"] == 45  # the caller's seed plus the attempt: reproducible
    assert fresh["temperature"] >= 0.7
    assert len({r.body for r in upstream.chat_requests}) == 3


async def test_the_same_invalid_reply_every_time_never_repeats_a_request(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    llm = await service(llm_env, max_retries=4)
    upstream.reply_json({"name": "n", "priority": "low", "steps": []}, times=None)
    with pytest.raises(LLMValidationError) as caught:
        await generate_structured(llm, "Plan", Plan, temperature=0, seed=42)
    assert caught.value.attempts == 5
    sent = upstream.chat_requests
    assert [r.json["seed"] for r in sent] == [42, 42, 45, 46, 47]
    assert [r.json["temperature"] for r in sent] == [0, 0, 0.7, 0.7, 0.7]
    assert all(m["role"] != "assistant" for r in sent[2:] for m in r.json["messages"])
    assert len({r.body for r in sent}) == len(sent)


async def test_json_schema_rung_keeps_the_schema_out_of_the_prompt_until_a_repair(
    llm_env: LLMEnv, upstream: StandInServer
) -> None:
    # The server enforces the schema on this rung; one that accepts json_schema but ignores
    # it still gets the schema once a reply fails validation.
    llm = await service(llm_env)
    upstream.reply("Sure! Here is a plan.")
    await generate_structured(llm, "Plan", Plan, system="Be brief.")
    first, repair = (r.json["messages"] for r in upstream.chat_requests)
    assert first[0] == {
        "role": "system",
        "content": "Be brief.\n\nReply with one JSON object only, no prose.",
    }
    assert repair[-1]["content"].startswith("That reply was invalid: the reply contains no JSON")
    assert json.dumps(strict_schema(Plan), separators=(",", ":")) in repair[-1]["content"]


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
        ("[" * 5000 + ' {"a": 1}', "nests too deeply"),
        ("[x " * 300 + '{"a": 1}', None),  # past MAX_JSON_STARTS brackets: not looked for
        ("[x " * 200 + '{"a": 1}', {"a": 1}),
        (("[" * 900 + "x") * 70, None),  # tried at 256 starts, not 63,000
    ],
)
def test_extract_json(text: str, expected: object) -> None:
    if expected is None or isinstance(expected, str):
        with pytest.raises(ValueError, match=expected or "no JSON"):
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
