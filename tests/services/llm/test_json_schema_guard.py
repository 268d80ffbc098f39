"""The JSON Schema guard: what it refuses, what it accepts, and the validator it builds."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest
from referencing.exceptions import Unresolvable

from app.services.llm import json_schema_guard as guard
from app.services.llm.json_schema_guard import (
    MAX_REFS,
    ReplyNotValidatedError,
    UnsafeSchemaError,
    guard_schema,
    guard_schema_off_loop,
    nesting_depth,
)
from tests.api.v1.test_llm_structured_schema import HOSTILE_SCHEMAS, remote  # noqa: F401


@pytest.mark.parametrize(
    ("case", "schema", "message"), HOSTILE_SCHEMAS, ids=[c for c, _, _ in HOSTILE_SCHEMAS]
)
def test_hostile_schemas_are_refused(case: str, schema: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsafeSchemaError) as info:
        guard_schema(json.loads(json.dumps(schema).replace("{remote}", "http://127.0.0.2")))
    assert message in str(info.value)


def _chain(length: int) -> dict[str, Any]:
    defs: dict[str, Any] = {f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(length)}
    defs[f"a{length}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/a0"}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {"$schema": guard.DRAFT_2020_12 + "#", "$id": "https://example.com/p", "type": "object"},
        {"$id": "https://example.com/p", "$defs": {"a": {}}, "$ref": "#/$defs/a"},
        {"$defs": {"x": {"$anchor": "name", "type": "string"}}, "$ref": "#name"},
        {"definitions": {"a b": {"type": "string"}}, "$ref": "#/definitions/a%20b"},
        {"$defs": {"a/b": {"type": "string"}}, "$ref": "#/$defs/a~1b"},
        {"type": "array", "items": {"$ref": "#"}},  # a cycle through an instance step
        _chain(MAX_REFS - 1),
    ],
)
def test_ordinary_schemas_are_accepted(schema: dict[str, Any]) -> None:
    guard_schema(schema)


def test_too_many_refs() -> None:
    with pytest.raises(UnsafeSchemaError, match=f"more than {MAX_REFS} \\$refs"):
        guard_schema(_chain(MAX_REFS + 1))


def test_pattern_error_names_its_location() -> None:
    schema = {"properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}
    with pytest.raises(UnsafeSchemaError, match="#/properties/a/pattern"):
        guard_schema(schema)


def test_invalid_schema_is_refused() -> None:
    with pytest.raises(UnsafeSchemaError, match="not a valid JSON Schema"):
        guard_schema({"type": "strnig"})


def test_in_place_cycle_through_allof_is_named() -> None:
    schema = {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}}}
    with pytest.raises(UnsafeSchemaError, match="cycle") as info:
        guard_schema(schema)
    assert "#/$defs/a" in str(info.value)
    assert "#/$defs/b" in str(info.value)


def test_ecma_unicode_escape_is_accepted() -> None:
    checked = guard_schema({"type": "string", "pattern": "^\\u00e9+$"})
    assert checked.validate("éé") == []
    assert checked.validate("e") != []


def test_patterns_run_in_linear_time() -> None:
    checked = guard_schema(
        {
            "patternProperties": {"^(a+)+$": {"type": "integer"}},
            "additionalProperties": False,
            "properties": {"s": {"pattern": "^(a+)+$"}},
        }
    )
    hostile = "a" * 100_000 + "!"
    errors = checked.validate({"s": hostile, hostile: 1})
    assert len(errors) == 2
    assert checked.validate({"s": "aaa", "aa": 1}) == []


def test_unique_items_equality() -> None:
    checked = guard_schema({"uniqueItems": True})
    assert checked.validate([1, True, {"a": [1]}, {"a": [2]}]) == []
    assert checked.validate([1, 1.0]) != []
    assert checked.validate([{"a": 1, "b": 2}, {"b": 2, "a": 1}]) != []
    assert checked.validate([{"a": i} for i in range(20_000)]) == []


def test_reply_depth_is_bounded_without_recursion() -> None:
    checked = guard_schema({"type": "array", "items": {"$ref": "#"}})
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert nesting_depth(deep) == 100_001
    [error] = checked.validate(deep)
    assert f"at most {checked.max_reply_depth}" in error


def test_accepted_worst_case_recursion_fits_the_stack() -> None:
    checked = guard_schema(_chain(MAX_REFS - 1))
    assert checked.validate("x") == []
    # A recursive schema with the longest in-place run allowed, at its deepest reply.
    run = guard.MAX_VALIDATION_STEPS // (guard.MIN_RECURSIVE_REPLY_DEPTH + 2) - 1
    defs: dict[str, Any] = {f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(run - 1)}
    defs[f"a{run - 1}"] = {"type": "array", "items": {"$ref": "#/$defs/a0"}}
    checked = guard_schema({"$defs": defs, "$ref": "#/$defs/a0"})
    value: Any = []
    for _ in range(checked.max_reply_depth - 1):
        value = [value]
    assert checked.validate(value) == []
    defs[f"a{run}"] = defs.pop(f"a{run - 1}")
    defs[f"a{run - 1}"] = {"$ref": f"#/$defs/a{run}"}  # one in-place step more
    with pytest.raises(UnsafeSchemaError, match="recursive schema"):
        guard_schema({"$defs": defs, "$ref": "#/$defs/a0"})


def test_recursion_error_becomes_a_clear_error() -> None:
    checked = guard_schema({"type": "array", "items": {"$ref": "#"}})
    value: Any = []
    for _ in range(50):
        value = [value]

    def deep_in_the_stack(levels: int) -> list[str]:
        return checked.validate(value) if levels == 0 else deep_in_the_stack(levels - 1)

    room = sys.getrecursionlimit() - 60
    with pytest.raises(ReplyNotValidatedError, match="too deeply"):
        deep_in_the_stack(room)


def test_the_validator_never_retrieves(remote: tuple[str, list[str]], tmp_path: Any) -> None:  # noqa: F811
    url, hits = remote
    secret = tmp_path / "s.json"
    secret.write_text('{"type": "integer"}')
    for ref in (f"{url}/schema.json", secret.as_uri()):
        # Built past the guard on purpose: a case the guard missed still retrieves nothing.
        validator = guard.GuardedValidator({"$ref": ref}, registry=guard.NO_RETRIEVAL)
        with pytest.raises(Unresolvable):
            validator.is_valid("x")
        unguarded = guard.GuardedSchema({"$ref": ref}, 64, validator)
        with pytest.raises(ReplyNotValidatedError, match="cannot be resolved"):
            unguarded.validate("x")
    assert hits == []


async def test_off_loop_check_and_its_time_limit() -> None:
    checked = await guard_schema_off_loop({"type": "string"})
    assert await checked.validate_off_loop("x") == []
    with pytest.raises(UnsafeSchemaError, match="not a valid"):
        await guard_schema_off_loop({"type": 5})
    branches = [{"type": "integer"}] * 49 + [{"type": "string"}]
    slow = guard_schema({"type": "array", "items": {"anyOf": branches}})
    with pytest.raises(ReplyNotValidatedError, match="took longer than"):
        await slow.validate_off_loop(["x"] * 100_000, limit=0.01)


def test_a_validation_given_up_on_stops_its_thread() -> None:
    # A thread cannot be killed: the validation itself must stop at its deadline, or it
    # holds a core and builds millions of errors long after the caller was answered.
    # Every item matches only the last of 50 branches: no error ends the walk early (the
    # guard stops at 100 errors), so only the deadline can.
    branches = [{"type": "integer"}] * 49 + [{"type": "string"}]
    slow = guard_schema({"type": "array", "items": {"anyOf": branches}})
    started = time.monotonic()
    with pytest.raises(ReplyNotValidatedError, match=r"took longer than 0\.05 s"):
        slow.validate(["x"] * 100_000, limit=0.05)
    assert time.monotonic() - started < 1.0
    assert slow.validate(["fine"]) == []  # the deadline does not outlive the validation


META_CORPUS: list[Any] = [
    {"type": "strin"},
    {"properties": {"a": {"minimum": "x"}}},
    {"$defs": {"a": {"items": 3}}},
    {"allOf": [{"pattern": 3}]},
    {"dependentSchemas": {"a": {"type": 5}}},
    {"$anchor": "1bad"},
    {"unevaluatedProperties": {"type": 1}},
    {"definitions": {"x": {"type": 2}}},
    {"dependencies": {"a": 3}},
    {"required": ["a", "a"]},
    {"$ref": 5},
    {"minLength": -1},
    {"allOf": []},
    {"properties": {"a": {"not": {"prefixItems": [{"$id": 3}]}}}},
    {"$defs": {"a": {"$defs": {"b": {"if": {"type": "nope"}}}}}},
    {"contentSchema": {"type": 3}},
    {"$id": "has#fragment"},
    5,
    [],
    True,
    {"enum": []},
    {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}},
    {"$defs": {"a": {"items": {}}}, "$ref": "#/$defs/a"},
    {"unevaluatedProperties": False, "dependencies": {"a": ["b"]}},
    {"$dynamicRef": "#meta", "$dynamicAnchor": "meta"},
    {"properties": {"$ref": {"type": "string"}, "$dynamicRef": {"const": 1}}},
]


@pytest.mark.parametrize("schema", META_CORPUS)
def test_flat_meta_schema_agrees_with_jsonschema(schema: Any) -> None:
    flat = guard.Draft202012Validator(guard.flat_meta_schema(), registry=guard.NO_RETRIEVAL)
    stock = guard.Draft202012Validator(guard.Draft202012Validator.META_SCHEMA)
    assert flat.is_valid(schema) == stock.is_valid(schema)


async def test_recent_verdicts_are_reused() -> None:
    schema = {"type": "object", "properties": {"b": {}, "a": {}}}
    first = await guard_schema_off_loop(schema)
    assert await guard_schema_off_loop(json.loads(json.dumps(schema))) is first
    reordered = await guard_schema_off_loop({"type": "object", "properties": {"a": {}, "b": {}}})
    assert list(reordered.schema["properties"]) == ["a", "b"]  # the order the caller gave
    for _ in range(2):
        with pytest.raises(UnsafeSchemaError, match="only local references"):
            await guard_schema_off_loop({"$ref": "http://127.0.0.2/x"})
