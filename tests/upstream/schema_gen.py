"""Make a deterministic JSON value that is valid against a JSON Schema.

Good enough for what Pydantic v2 emits (``model_json_schema()``) and what people write by
hand for ``response_format: {"type": "json_schema"}``: ``$defs``/``$ref`` (also recursive),
``anyOf``/``oneOf``/``allOf``, nullable fields, ``enum``, ``const``, ``default``, nested
objects, ``additionalProperties`` maps, arrays and tuples (``prefixItems``) with
``minItems``/``maxItems``/``uniqueItems``, strings with ``minLength``/``maxLength``/
``format``/``pattern``, integers and numbers with inclusive and exclusive bounds and
``multipleOf``, booleans and null. Values are informative: a string says which field it is.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["example_for_schema"]

_MAX_DEPTH = 24
_SHALLOW = 5  # beyond this depth, optional parts are left out so recursion ends

_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T12:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "123e4567-e89b-42d3-a456-426614174000",
}


def example_for_schema(schema: Mapping[str, Any] | bool) -> Any:
    """A JSON-compatible value valid against ``schema`` (raises ``ValueError`` for ``false``)."""
    return _Generator(schema).value(schema, "value", 0, 0)


class _Generator:
    def __init__(self, root: Mapping[str, Any] | bool) -> None:
        self.root = root

    # -- references --------------------------------------------------------------------

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        node: Any = self.root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            part = raw.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def flatten(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        """Inline ``$ref`` and ``allOf`` so the rest of the code sees one plain schema."""
        out = dict(schema)
        for _ in range(_MAX_DEPTH):
            ref = out.pop("$ref", None)
            if ref is None:
                break
            target = self.resolve(ref)
            if target is False:
                raise ValueError("$ref points at the false schema")
            out = {**(target if isinstance(target, Mapping) else {}), **out}
        for part in out.pop("allOf", []):
            flat = self.flatten(part, depth) if isinstance(part, Mapping) else {}
            out = _merge(out, flat)
        return out

    # -- values --------------------------------------------------------------------------

    def value(self, schema: Mapping[str, Any] | bool, name: str, depth: int, index: int) -> Any:
        if schema is True:
            return name
        if schema is False:
            raise ValueError(f"no value satisfies the false schema (at {name!r})")
        if depth > _MAX_DEPTH:
            return None
        s = self.flatten(schema, depth)
        if "const" in s:
            return copy.deepcopy(s["const"])
        if "default" in s:
            return copy.deepcopy(s["default"])
        if "enum" in s:
            choices = s["enum"]
            return copy.deepcopy(choices[index % len(choices)])
        for key in ("anyOf", "oneOf"):
            if key in s:
                branch = _pick_branch(s[key], depth >= _SHALLOW, self)
                rest = {k: v for k, v in s.items() if k not in ("anyOf", "oneOf")}
                merged = _merge(rest, self.flatten(branch, depth)) if rest else branch
                return self.value(merged, name, depth, index)
        kind = _kind(s, prefer_null=depth >= _SHALLOW)
        if kind == "object":
            return self.object(s, name, depth)
        if kind == "array":
            return self.array(s, name, depth)
        if kind in ("integer", "number"):
            return _number(s, kind == "integer", index)
        if kind == "boolean":
            return index % 2 == 0
        if kind == "null":
            return None
        return _string(s, name, index)

    def object(self, s: Mapping[str, Any], name: str, depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = s.get("properties", {})
        required: Sequence[str] = s.get("required", [])
        shallow = depth >= _SHALLOW
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if shallow and key not in required:
                continue
            out[key] = self.value(sub, key, depth + 1, 0)
        extra = s.get("additionalProperties", True)
        for key in required:
            if key not in out:
                out[key] = self.value(extra if extra is not False else True, key, depth + 1, 0)
        wanted = int(s.get("minProperties", 0))
        if not props and isinstance(extra, Mapping) and extra and not shallow:
            wanted = max(wanted, 1)  # a dict[str, X] field: show one entry
        n = 1
        while len(out) < wanted and extra is not False:
            key = f"{name}_key_{n}"
            n += 1
            if key not in out:
                out[key] = self.value(extra, key, depth + 1, n)
        return out

    def array(self, s: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        prefix: Sequence[Any] = s.get("prefixItems", [])
        items = s.get("items", True)
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, s.get("additionalItems", True)
        lo = int(s.get("minItems", 0))
        hi = s.get("maxItems")
        count = max(lo, len(prefix), 0 if depth >= _SHALLOW else 1)
        if items is False:
            count = min(count, len(prefix))
        if hi is not None:
            count = min(count, int(hi))
        label = name[:-1] if name.endswith("s") and len(name) > 1 else name
        out: list[Any] = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            out.append(self.value(sub, f"{label} {i + 1}", depth + 1, i))
        return out


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two schemas that must both hold (the cases ``allOf`` needs in practice)."""
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and key in out:
            out[key] = {**out[key], **value}
        elif key == "required" and key in out:
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key in ("minimum", "exclusiveMinimum", "minLength", "minItems") and key in out:
            out[key] = max(out[key], value)
        elif key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems") and key in out:
            out[key] = min(out[key], value)
        else:
            out.setdefault(key, value)
    return out


def _is_null(schema: Any, gen: _Generator) -> bool:
    if not isinstance(schema, Mapping):
        return False
    flat = gen.flatten(schema, 0)
    return flat.get("type") == "null" or flat.get("const", 0) is None


def _pick_branch(branches: Sequence[Any], prefer_null: bool, gen: _Generator) -> Any:
    """The first non-null branch (the informative one), or the null one deep down."""
    nulls = [b for b in branches if _is_null(b, gen)]
    others = [b for b in branches if not _is_null(b, gen) and b is not False]
    if prefer_null and nulls:
        return nulls[0]
    return others[0] if others else nulls[0]


def _kind(s: Mapping[str, Any], prefer_null: bool) -> str:
    declared = s.get("type")
    if isinstance(declared, list):
        if prefer_null and "null" in declared:
            return "null"
        non_null = [t for t in declared if t != "null"]
        return str(non_null[0]) if non_null else "null"
    if isinstance(declared, str):
        return declared
    if "properties" in s or "additionalProperties" in s or "required" in s:
        return "object"
    if "items" in s or "prefixItems" in s or "minItems" in s:
        return "array"
    if any(k in s for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounds(s: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low_exclusive, high, high_exclusive), for draft-04 and 2020-12 styles."""
    low, low_ex = s.get("minimum"), False
    high, high_ex = s.get("maximum"), False
    ex_min, ex_max = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if ex_min is True:
        low_ex = True
    elif _is_number(ex_min) and (low is None or ex_min >= low):
        low, low_ex = ex_min, True
    if ex_max is True:
        high_ex = True
    elif _is_number(ex_max) and (high is None or ex_max <= high):
        high, high_ex = ex_max, True
    return low, low_ex, high, high_ex


def _number(s: Mapping[str, Any], integer: bool, index: int) -> int | float:
    low, low_ex, high, high_ex = _bounds(s)
    step = s.get("multipleOf")
    if integer or (step is not None and float(step).is_integer()):
        lo = None if low is None else (math.floor(low) + 1 if low_ex else math.ceil(low))
        hi = None if high is None else (math.ceil(high) - 1 if high_ex else math.floor(high))
        value = 1 + index
        if lo is not None and value < lo:
            value = lo + index
        if hi is not None and value > hi:
            value = hi if lo is None else max(lo, hi - index)
        if step:
            k = int(step)
            value = math.ceil(value / k) * k
            if hi is not None and value > hi:
                value = math.floor(hi / k) * k
        return int(value)
    value_f = 1.5 + index
    if step:
        value_f = math.ceil(value_f / step) * step
    if low is not None and (value_f < low or (low_ex and value_f <= low)):
        value_f = float(low) + (1.0 if high is None else (float(high) - float(low)) / 2)
    if high is not None and (value_f > high or (high_ex and value_f >= high)):
        value_f = float(high) - (1.0 if low is None else (float(high) - float(low)) / 2)
    return value_f


def _string(s: Mapping[str, Any], name: str, index: int) -> str:
    fmt = s.get("format")
    value = _FORMATS.get(fmt, name) if isinstance(fmt, str) else name
    pattern = s.get("pattern")
    if isinstance(pattern, str) and not re.search(pattern, value):
        value = _from_pattern(pattern, value)
    low = int(s.get("minLength", 0))
    high = s.get("maxLength")
    if len(value) < low:
        value += "x" * (low - len(value))
    if high is not None and len(value) > int(high):
        value = value[: int(high)]
    return value


# -- strings from regular expressions -------------------------------------------------


def _from_pattern(pattern: str, fallback: str) -> str:
    """A string matched by ``pattern`` (via the stdlib regex parser), else ``fallback``."""
    try:
        import re._parser as sre  # type: ignore[import-not-found]

        text = _render(sre.parse(pattern), sre, {})
    except Exception:  # an exotic pattern: give up quietly
        return fallback
    return text if re.search(pattern, text) else fallback


_CATEGORY_CHARS = {
    "CATEGORY_DIGIT": "0",
    "CATEGORY_NOT_DIGIT": "a",
    "CATEGORY_WORD": "a",
    "CATEGORY_NOT_WORD": "-",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": "a",
}


def _render(parsed: Any, sre: Any, groups: dict[int, str]) -> str:
    out: list[str] = []
    for op, arg in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if chr(arg) != "a" else "b")
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_char_in_set(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            out.append("".join(_render(sub, sre, groups) for _ in range(max(low, 1) if low else 0)))
        elif name == "SUBPATTERN":
            group, _add, _del, sub = arg
            text = _render(sub, sre, groups)
            if group is not None:
                groups[group] = text
            out.append(text)
        elif name == "BRANCH":
            out.append(_render(arg[1][0], sre, groups))
        elif name == "GROUPREF":
            out.append(groups.get(arg, ""))
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        elif name == "ATOMIC_GROUP":
            out.append(_render(arg, sre, groups))
        else:
            raise ValueError(f"unsupported regex construct {name}")
    return "".join(out)


def _char_in_set(items: Any) -> str:
    negate = any(str(op) == "NEGATE" for op, _ in items)
    candidates: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            candidates.append(chr(arg))
        elif name == "RANGE":
            candidates.append(chr(arg[0]))
        elif name == "CATEGORY":
            candidates.append(_CATEGORY_CHARS.get(str(arg), "a"))
    if not negate:
        return candidates[0] if candidates else "a"
    for ch in "aA0-_ x":
        if ch not in candidates:
            return ch
    return "~"
