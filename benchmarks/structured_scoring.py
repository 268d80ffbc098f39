"""Field-by-field scoring of structured replies against known answers.

A field is right when its value equals the expected one after a light normalisation:

* text: case, surrounding whitespace and quotes, runs of whitespace, trailing sentence
  punctuation and one leading article ("the", "a", "an") are ignored — nothing else, so
  "Amina Said" is not "Dr. Amina Said" unless the task lists both as acceptable;
* numbers: equal within 1e-6 relative (an int and a float of the same value match); a
  boolean is never a number;
* lists: the same length and every item right, in order;
* an expected tuple lists acceptable alternatives: any one of them is right.

A reply that never became a valid instance (``value is None``) has every field wrong: a
caller gets nothing from it, so it is scored as such and not skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_SPACE = re.compile(r"\s+")
_ARTICLE = re.compile(r"^(the|a|an)\s+")
_EDGE = " \t\n\"'`"
_TRAILING = ".,;:!?"


def normalise_text(text: str) -> str:
    """`text` folded for comparison (see the module docstring)."""
    text = _SPACE.sub(" ", text.strip(_EDGE).casefold())
    text = text.rstrip(_TRAILING).strip(_EDGE)
    return _ARTICLE.sub("", text)


def value_matches(expected: Any, actual: Any) -> bool:
    """Whether `actual` is right for `expected` (a tuple lists acceptable alternatives)."""
    if isinstance(expected, tuple):
        return any(value_matches(option, actual) for option in expected)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
    if isinstance(expected, int | float):
        if not isinstance(actual, int | float):
            return False
        return math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(expected, str):
        if isinstance(actual, int | float):
            actual = str(actual)
        return isinstance(actual, str) and normalise_text(actual) == normalise_text(expected)
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(value_matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(score_fields(expected, actual).values())
    return bool(expected == actual)


def score_fields(expected: Mapping[str, Any], value: Mapping[str, Any] | None) -> dict[str, bool]:
    """For each expected field, whether `value` has it right (all wrong when `value` is None)."""
    return {
        name: value is not None and name in value and value_matches(want, value[name])
        for name, want in expected.items()
    }


def summarise_scores(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Valid share, fields-right share and all-fields-right share of scored records.

    Each record carries ``valid`` (bool) and ``fields`` (`score_fields`' result). Shares are
    of all records (or all their fields), invalid ones included; None when there are none.
    """
    rows: Sequence[Mapping[str, Any]] = list(records)
    if not rows:
        return {
            "calls": 0,
            "valid_share": None,
            "fields": 0,
            "fields_right": 0,
            "fields_right_share": None,
            "all_right_share": None,
        }
    fields = sum(len(r["fields"]) for r in rows)
    right = sum(sum(1 for ok in r["fields"].values() if ok) for r in rows)
    return {
        "calls": len(rows),
        "valid_share": round(sum(1 for r in rows if r["valid"]) / len(rows), 4),
        "fields": fields,
        "fields_right": right,
        "fields_right_share": round(right / fields, 4) if fields else None,
        "all_right_share": round(
            sum(1 for r in rows if r["fields"] and all(r["fields"].values())) / len(rows), 4
        ),
    }
