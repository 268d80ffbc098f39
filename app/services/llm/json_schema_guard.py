"""A caller's JSON Schema, checked once and made safe to validate replies against.

Everything a caller sends is hostile, a schema too. `guard_schema` refuses, with a message
naming the offending place, a schema that could make validation fetch or open anything, recurse
without end, backtrack for ever or simply take too long:

- only local `$ref`s: `#`, `#/json/pointer` to a subschema that exists, `#name` for an
  `$anchor` that exists; no `$dynamicRef`, no `$id` below the root, `$schema` only at the root
  and only 2020-12. The validator's registry refuses every retrieval anyway, so a missed case
  still fetches nothing;
- bounded size, nesting depth, node count and number of `$ref`s;
- a `$ref` cycle must pass through a keyword that descends into the instance (`properties`,
  `items`, …): a tree schema is fine, `{"$ref": "#"}` is not. The longest chain of keywords a
  validation can follow is bounded, and so is the reply depth it is followed over, so validation
  recursion stays far below Python's limit;
- `pattern` and `patternProperties` must compile with RE2 (no backreferences or lookaround) and
  are matched with RE2, which runs in linear time.

`GuardedSchema.validate` then validates a parsed reply; `validate_off_loop` does it in a small
thread pool with a time limit, so that no reply can stall the event loop, and
`guard_schema_off_loop` checks a schema there too (jsonschema's meta-schema check is slow).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import unquote

import re2
import referencing
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as SPECIFICATIONS  # type: ignore[import-untyped]
from referencing.exceptions import NoSuchResource, Unresolvable

MAX_SCHEMA_CHARS = 65_536  # about the size of its compact JSON
MAX_SCHEMA_DEPTH = 32  # JSON nesting levels
MAX_SCHEMA_NODES = 10_000  # JSON values: objects, arrays, strings, numbers, …
MAX_REFS = 100
MAX_PATTERN_CHARS = 1_000
MAX_EXPANSION = 1_000  # subschemas one instance value can be checked against in place
MAX_VALIDATION_STEPS = 256  # nested subschema steps one validation may take (~2 frames each)
MAX_REPLY_DEPTH = 64  # nesting levels of a reply
MIN_RECURSIVE_REPLY_DEPTH = 8  # a recursive schema must allow replies at least this deep
VALIDATION_TIMEOUT = 2.0  # seconds
MAX_ERRORS = 100  # errors collected from one validation (10 are reported)

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Keywords whose value is one subschema / a list of them / a map of them, and whether the
# subschema applies to the same instance value (in place) or to a part of it.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
_DESCENDING_ONE = (
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "contentSchema",
)
_DESCENDING_LIST = ("prefixItems",)
_DESCENDING_MAP = ("properties", "patternProperties")
_DEFINITIONS = ("$defs", "definitions")  # reached only through a $ref

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.never_capture = True
# ECMA-262's \uXXXX, which RE2 spells \x{XXXX} (an even run of backslashes escapes itself).
_ECMA_UNICODE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")


class UnsafeSchemaError(ValueError):
    """A caller's schema that is refused; the message says where and why."""


class ReplyNotValidatedError(Exception):
    """A reply that could not be validated within the bounds (too slow); not the reply's fault
    alone, so asking the model again would not help."""


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled with RE2 (ECMA `\\uXXXX` escapes accepted); raises re2.error."""
    return re2.compile(_ECMA_UNICODE_ESCAPE.sub(r"\1\\x{\2}", pattern), _RE2_OPTIONS)


def _search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


# ── the validator: RE2 patterns, linear uniqueItems, no retrieval ──────────────────────────


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key
        for key in instance
        if key not in properties and not any(_search(p, key) for p in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False and extras:
        names = ", ".join(repr(key) for key in sorted(extras)[:10])
        yield ValidationError(f"Additional properties are not allowed ({names} unexpected)")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    # jsonschema compares unhashable items pairwise: quadratic in the reply's length.
    array = validator.is_type(instance, "array")
    if unique and array and len({_canonical(item) for item in instance}) < len(instance):
        yield ValidationError(f"{_short(instance)} has non-unique elements")


def _canonical(value: Any) -> Any:
    """A hashable key equal for values JSON Schema calls equal (1 == 1.0, true != 1)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _OutOfTime(Exception):
    """A validation ran past its deadline (raised inside the validating thread)."""


# The deadline of the validation running in this thread. Checked as the validator walks
# (each combinator, each array and object), so that a validation given up on stops: a
# thread cannot be killed, and one left running holds a core and grows without bound
# (a 100,000-item reply against 50 failing anyOf branches builds millions of errors).
_deadline = threading.local()


def _within_deadline(keyword: Any) -> Any:
    def checked(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if time.monotonic() > getattr(_deadline, "at", math.inf):
            raise _OutOfTime
        yield from keyword(validator, value, instance, schema)

    return checked


_WALKING = ("anyOf", "oneOf", "allOf", "items", "prefixItems", "properties", "contains")

GuardedValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        **{name: _within_deadline(Draft202012Validator.VALIDATORS[name]) for name in _WALKING},
        "pattern": _pattern,
        "patternProperties": _within_deadline(_pattern_properties),
        "additionalProperties": _within_deadline(_additional_properties),
        "uniqueItems": _unique_items,
    },
)


def _refuse_retrieval(uri: str) -> NoReturn:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


# Nothing outside the caller's schema is ever fetched or opened, whatever its $refs say.
NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


def flat_meta_schema() -> dict[str, Any]:
    """The 2020-12 meta-schema as one resource: its vocabularies merged, `$dynamicRef: #meta`
    as `$ref: #`. It accepts the same schemas as the original, which jsonschema checks about
    16 times more slowly (a lookup per vocabulary and a dynamic scope search per subschema)."""

    def local(node: Any) -> Any:
        if isinstance(node, list):
            return [local(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: local(value) for key, value in node.items()}
        # Only string values are references: `properties` has keys named "$ref" too.
        if node.get("$dynamicRef") == "#meta":
            del node["$dynamicRef"]
            node["$ref"] = "#"
        if isinstance(node.get("$ref"), str):  # "meta/validation#/$defs/x" → "#/$defs/x"
            node["$ref"] = "#" + node["$ref"].partition("#")[2]
        return node

    top = SPECIFICATIONS.contents(DRAFT_2020_12)
    base = DRAFT_2020_12.rsplit("/", 1)[0]
    parts = [SPECIFICATIONS.contents(f"{base}/{part['$ref']}") for part in top["allOf"]]
    properties: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    for part in [*parts, top]:
        properties |= local(part.get("properties", {}))
        definitions |= local(part.get("$defs", {}))
    return {"type": ["object", "boolean"], "properties": properties, "$defs": definitions}


_META_VALIDATOR = Draft202012Validator(flat_meta_schema(), registry=NO_RETRIEVAL)


# ── the check ──────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class GuardedSchema:
    """A caller's schema that passed `guard_schema`, ready to validate replies."""

    schema: dict[str, Any]
    max_reply_depth: int
    validator: Validator

    def validate(self, value: Any, limit: float = VALIDATION_TIMEOUT) -> list[str]:
        """The reasons `value` is invalid (at most 10, from the first `MAX_ERRORS` found),
        empty if it is valid; ReplyNotValidatedError after `limit` seconds."""
        depth = nesting_depth(value)
        if depth > self.max_reply_depth:
            return [f"value: nests {depth} levels deep; at most {self.max_reply_depth} allowed"]
        _deadline.at = time.monotonic() + limit
        try:
            errors = sorted(
                itertools.islice(self.validator.iter_errors(value), MAX_ERRORS),
                key=lambda e: [str(p) for p in e.absolute_path],
            )
        except _OutOfTime:
            raise ReplyNotValidatedError(
                f"validating the reply against the schema took longer than {limit:g} s"
            ) from None
        except RecursionError:
            raise ReplyNotValidatedError("the schema nests too deeply to validate") from None
        except Unresolvable as exc:  # the guard admits only resolvable refs; never a 500 anyway
            raise ReplyNotValidatedError(
                f"the schema's $ref {exc.ref!r} cannot be resolved"
            ) from None
        finally:
            _deadline.at = math.inf
        return [
            f"{'.'.join(str(p) for p in err.absolute_path) or 'value'}: {err.message}"
            for err in errors[:10]
        ]

    async def validate_off_loop(self, value: Any, limit: float = VALIDATION_TIMEOUT) -> list[str]:
        """`validate` in the validation threads, given up after `limit` seconds (the
        thread stops at its own deadline; waiting here ends a moment later at the latest)."""
        future = asyncio.get_running_loop().run_in_executor(
            _VALIDATION_POOL, self.validate, value, limit
        )
        try:
            return await asyncio.wait_for(future, limit + 1)
        except TimeoutError:
            raise ReplyNotValidatedError(
                f"validating the reply against the schema took longer than {limit:g} s"
            ) from None


# Its own small pool: validations waiting for one another never hold up other thread work.
_VALIDATION_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="schema-validation")


def nesting_depth(value: Any) -> int:
    """How deeply `value` nests (a scalar is 1), computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
    return deepest


def guard_schema(schema: Any) -> GuardedSchema:
    """`schema` checked against every rule above; raises UnsafeSchemaError naming the fault."""
    check_size(schema)
    # Patterns are compiled with RE2 below, not with Python's `re` by a format checker.
    error = best_match(_META_VALIDATOR.iter_errors(schema))
    if error is not None:
        raise UnsafeSchemaError(f"not a valid JSON Schema: {error.message}")
    if not isinstance(schema, dict):
        raise UnsafeSchemaError("the schema must be a JSON object")
    graph = _Graph.of(schema)
    max_reply_depth = graph.bound_recursion()
    # Without $schema no subschema can switch the validator class to a stock one.
    own = {key: value for key, value in schema.items() if key != "$schema"}
    validator = GuardedValidator(own, registry=NO_RETRIEVAL)
    return GuardedSchema(schema=schema, max_reply_depth=max_reply_depth, validator=validator)


async def guard_schema_off_loop(schema: Any, limit: float = VALIDATION_TIMEOUT) -> GuardedSchema:
    """`guard_schema` in the validation threads, the last verdicts remembered: checking a
    large schema takes a few hundred milliseconds, which the event loop must not wait on."""
    if not isinstance(schema, dict):
        raise UnsafeSchemaError("the schema must be a JSON object")
    check_size(schema)  # cheap, and spares the threads an oversized schema
    key = json.dumps(schema)  # key order kept: it is the order the upstream is shown
    known = _RECENT.pop(key, None)
    if known is None:
        future = asyncio.get_running_loop().run_in_executor(_VALIDATION_POOL, _verdict, schema)
        try:
            known = await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise UnsafeSchemaError(f"checking the schema took longer than {limit:g} s") from None
    _RECENT[key] = known  # most recent last
    if len(_RECENT) > RECENT_SCHEMAS:
        del _RECENT[next(iter(_RECENT))]
    if isinstance(known, str):
        raise UnsafeSchemaError(known)
    return known


# Callers tend to send the same schema again and again: the last verdicts, either way.
RECENT_SCHEMAS = 256
_RECENT: dict[str, GuardedSchema | str] = {}


def _verdict(schema: dict[str, Any]) -> GuardedSchema | str:
    try:
        return guard_schema(schema)
    except UnsafeSchemaError as exc:
        return str(exc)


def check_size(schema: Any) -> None:
    """Raise UnsafeSchemaError if `schema` is too large or nests too deeply (no recursion)."""
    nodes, chars, stack = 0, 0, [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_SCHEMA_DEPTH:
            raise UnsafeSchemaError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        if isinstance(node, dict):
            chars += 2 + sum(len(key) + 4 for key in node)
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            chars += 2 + len(node)
            stack.extend((item, depth + 1) for item in node)
        else:
            chars += len(node) + 2 if isinstance(node, str) else 8
        if nodes > MAX_SCHEMA_NODES:
            raise UnsafeSchemaError(f"the schema has more than {MAX_SCHEMA_NODES} JSON values")
        if chars > MAX_SCHEMA_CHARS:
            raise UnsafeSchemaError(f"the schema is larger than {MAX_SCHEMA_CHARS} characters")


def _pointer(base: str, *steps: str) -> str:
    """`base` (a `#/json/pointer`) extended by `steps`."""
    return base + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in steps)


@dataclass
class _Graph:
    """The subschemas of a (valid, size-checked) schema and the steps validation takes between
    them: in place (same instance value) or descending (into a part of it)."""

    nodes: dict[str, Any]
    in_place: dict[str, list[str]]
    descending: dict[str, list[str]]

    @classmethod
    def of(cls, schema: dict[str, Any]) -> _Graph:
        graph = cls({}, {}, {})
        anchors: dict[str, str] = {}
        refs: list[tuple[str, str]] = []
        seen = {"patternProperties": False, "unevaluatedProperties": False}
        graph._walk(schema, "#", anchors, refs, seen)
        if seen["patternProperties"] and seen["unevaluatedProperties"]:
            raise UnsafeSchemaError(
                "unevaluatedProperties cannot be combined with patternProperties"
            )
        if len(refs) > MAX_REFS:
            raise UnsafeSchemaError(f"the schema has more than {MAX_REFS} $refs")
        for where, ref in refs:
            graph.in_place[where].append(graph._target(ref, where, anchors))
        return graph

    def _walk(
        self,
        node: Any,
        here: str,
        anchors: dict[str, str],
        refs: list[tuple[str, str]],
        seen: dict[str, bool],
    ) -> None:
        self.nodes[here] = node
        self.in_place[here], self.descending[here] = [], []
        if not isinstance(node, dict):
            return  # true or false
        if "$schema" in node and (here != "#" or node["$schema"].rstrip("#") != DRAFT_2020_12):
            raise UnsafeSchemaError(
                f"$schema at {here}: only {DRAFT_2020_12!r} at the root is supported"
            )
        if "$id" in node and here != "#":
            raise UnsafeSchemaError(f"$id at {here}: only the root schema may have an $id")
        if "$dynamicRef" in node:
            raise UnsafeSchemaError(f"$dynamicRef at {here} is not supported; use $ref")
        for keyword in ("$anchor", "$dynamicAnchor"):
            if keyword in node:
                anchors[node[keyword]] = here
        if "$ref" in node:
            refs.append((here, node["$ref"]))
        for keyword in ("patternProperties", "unevaluatedProperties"):
            seen[keyword] = seen[keyword] or keyword in node
        if "pattern" in node:
            _check_pattern(node["pattern"], f"{here}/pattern")
        for pattern in node.get("patternProperties", {}):
            _check_pattern(pattern, _pointer(here, "patternProperties", pattern))

        def child(sub: Any, *steps: str, in_place: bool | None) -> None:
            there = _pointer(here, *steps)
            self._walk(sub, there, anchors, refs, seen)
            if in_place is not None:
                (self.in_place if in_place else self.descending)[here].append(there)

        for keyword, value in node.items():
            if keyword in _IN_PLACE_ONE or keyword in _DESCENDING_ONE:
                child(value, keyword, in_place=keyword in _IN_PLACE_ONE)
            elif keyword in _IN_PLACE_LIST or keyword in _DESCENDING_LIST:
                for index, item in enumerate(value):
                    child(item, keyword, str(index), in_place=keyword in _IN_PLACE_LIST)
            elif keyword in _IN_PLACE_MAP or keyword in _DESCENDING_MAP:
                for name, item in value.items():
                    child(item, keyword, name, in_place=keyword in _IN_PLACE_MAP)
            elif keyword in _DEFINITIONS:
                for name, item in value.items():
                    child(item, keyword, name, in_place=None)

    def _target(self, ref: str, where: str, anchors: Mapping[str, str]) -> str:
        if not ref.startswith("#"):
            raise UnsafeSchemaError(
                f"$ref {ref!r} at {where}: only local references (#, #/$defs/…) are allowed"
            )
        fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            if fragment not in anchors:
                raise UnsafeSchemaError(f"$ref {ref!r} at {where}: no $anchor {fragment!r}")
            return anchors[fragment]
        target = "#" + fragment
        if target not in self.nodes:
            raise UnsafeSchemaError(f"$ref {ref!r} at {where} does not point to a subschema")
        return target

    def bound_recursion(self) -> int:
        """The deepest reply validation may follow; raises if the schema makes it unsafe."""
        in_place_order = _topological(self.nodes, self.in_place)
        if in_place_order is None:
            raise UnsafeSchemaError(
                "$ref cycle that never descends into the value: "
                + " → ".join(_cycle(self.nodes, self.in_place))
            )
        chain: dict[str, int] = {}  # longest run of in-place steps from each subschema
        expansion: dict[str, int] = {}  # subschemas checked in place from each, itself included
        for node in reversed(in_place_order):
            targets = self.in_place[node]
            chain[node] = max((1 + chain[t] for t in targets), default=0)
            expansion[node] = min(1 + sum(expansion[t] for t in targets), MAX_EXPANSION + 1)
            if expansion[node] > MAX_EXPANSION:
                raise UnsafeSchemaError(
                    f"{node} expands to more than {MAX_EXPANSION} subschemas checked against "
                    "one value (allOf/anyOf/oneOf/$ref fan out)"
                )
        longest_run = max(chain.values(), default=0)
        steps = {n: [*self.in_place[n], *self.descending[n]] for n in self.nodes}
        order = _topological(self.nodes, steps)
        if order is not None:  # no recursion: validation depth is bounded by the schema
            longest: dict[str, int] = {}
            for node in reversed(order):
                longest[node] = max((1 + longest[t] for t in steps[node]), default=0)
            if max(longest.values(), default=0) > MAX_VALIDATION_STEPS:
                raise UnsafeSchemaError(
                    f"validation would nest more than {MAX_VALIDATION_STEPS} subschemas deep"
                )
            return MAX_REPLY_DEPTH
        # Recursive: each level of the reply costs at most one descending step and a run of
        # in-place ones, so bound the reply's depth to keep the product within the budget.
        depth = min(MAX_REPLY_DEPTH, MAX_VALIDATION_STEPS // (longest_run + 1) - 2)
        if depth < MIN_RECURSIVE_REPLY_DEPTH:
            raise UnsafeSchemaError(
                f"a recursive schema may chain at most "
                f"{MAX_VALIDATION_STEPS // (MIN_RECURSIVE_REPLY_DEPTH + 2) - 1} subschemas "
                f"in place (allOf/anyOf/oneOf/$ref…); this one chains {longest_run}"
            )
        return depth


def _check_pattern(pattern: str, where: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsafeSchemaError(f"pattern at {where} is longer than {MAX_PATTERN_CHARS} characters")
    try:
        compile_pattern(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise UnsafeSchemaError(
            f"pattern {pattern[:100]!r} at {where} is not supported ({reason}); patterns are "
            "matched with RE2: no backreferences or lookaround"
        ) from None


def _topological(nodes: Mapping[str, Any], edges: Mapping[str, list[str]]) -> list[str] | None:
    """The nodes, each before those it has an edge to; None if the edges make a cycle."""
    order = _topological_prefix(nodes, edges)
    return order if len(order) == len(nodes) else None


def _topological_prefix(nodes: Mapping[str, Any], edges: Mapping[str, list[str]]) -> list[str]:
    """Kahn's algorithm: the nodes it can order (all of them unless there is a cycle)."""
    incoming = dict.fromkeys(nodes, 0)
    for targets in edges.values():
        for target in targets:
            incoming[target] += 1
    ready = [node for node, count in incoming.items() if count == 0]
    order: list[str] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for target in edges[node]:
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return order


def _cycle(nodes: Mapping[str, Any], edges: Mapping[str, list[str]]) -> list[str]:
    """One cycle of `edges`, as the subschemas it passes (the first repeated at the end)."""
    ordered = set(_topological_prefix(nodes, edges))
    # A node left out of a topological order is on a cycle or leads to one: walk to a repeat.
    node = next(node for node in nodes if node not in ordered)
    path: list[str] = []
    index: dict[str, int] = {}
    while node not in index:
        index[node] = len(path)
        path.append(node)
        node = next(t for t in edges[node] if t not in ordered)
    return [*path[index[node] :], node]
