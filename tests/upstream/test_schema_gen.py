"""The schema-driven JSON generator makes values that validate."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from tests.upstream.schema_gen import example_for_schema


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str = Field(min_length=12, max_length=40)
    postcode: str = Field(pattern=r"^\d{5}(-\d{4})?$")
    country: Literal["US", "CA"]


class Node(BaseModel):
    name: str
    children: list[Node] = Field(default_factory=list)
    parent: Node | None


class Everything(BaseModel):
    name: str
    age: int = Field(ge=18, le=120)
    probability: float = Field(gt=0, lt=1)
    half_steps: float = Field(gt=5, multiple_of=0.5)
    sevens: int = Field(gt=10, multiple_of=7)
    negative: int = Field(lt=-3)
    colour: Colour
    tags: list[str] = Field(min_length=3, max_length=5)
    unique: set[int] = Field(min_length=2)
    address: Address
    old_address: Address | None = None
    nickname: str | None
    scores: dict[str, int]
    pair: tuple[int, str]
    active: bool = True
    code: Annotated[str, Field(pattern=r"^[A-Z]{3}-[a-z0-9]+$")]
    tree: Node


def check(schema: Any) -> Any:
    value = example_for_schema(schema)
    jsonschema.validate(value, schema)
    return value


def test_pydantic_schema_with_everything_validates() -> None:
    value = check(Everything.model_json_schema())
    assert value["colour"] == "red"
    assert len(value["tags"]) == 3
    assert value["nickname"] == "nickname"  # a nullable field gets its informative branch
    assert value["old_address"] is None  # ...unless it has a default


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 2},
        {"type": "number", "exclusiveMinimum": 0.1, "exclusiveMaximum": 0.2},
        {"type": "number", "minimum": 5, "maximum": 5},
        {"type": "integer", "minimum": 100, "multipleOf": 25},
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "number",
            "maximum": 0,
            "exclusiveMaximum": True,
        },
        {"type": "string", "minLength": 30},
        {"type": "string", "maxLength": 2},
        {"type": "string", "pattern": "^(foo|bar)+[0-9]{2,}$"},
        {"type": "string", "pattern": "^[^a-z]+$"},
        {"type": "string", "format": "date-time"},
        {"const": {"nested": [1, 2]}},
        {"enum": [None, 3]},
        {"type": ["null", "string"]},
        {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
        {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "boolean"}}]},
        {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 3, "uniqueItems": True},
        {"type": "array", "prefixItems": [{"type": "integer"}, {"const": "b"}], "items": False},
        {"type": "array", "maxItems": 0},
        {"type": "object", "additionalProperties": False, "minProperties": 0},
        {"type": "object", "additionalProperties": {"type": "number"}, "minProperties": 2},
        {"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"type": "boolean"}}, "$ref": "#/$defs/A"},
        {},
    ],
)
def test_hand_written_schemas_validate(schema: dict[str, Any]) -> None:
    check(schema)


def test_recursion_terminates() -> None:
    value = check(Node.model_json_schema())
    depth = 0
    while value.get("children"):
        value = value["children"][0]
        depth += 1
    assert 1 <= depth < 10


def test_same_schema_same_value() -> None:
    schema = Everything.model_json_schema()
    assert example_for_schema(schema) == example_for_schema(schema)


def test_false_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="false schema"):
        example_for_schema(False)
