"""The labelled structured benchmark's scoring: what counts as a right field, and the sums."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.structured_accuracy import score, verdicts
from benchmarks.structured_labelled import LABELLED_CLASSES, LABELLED_TASKS, labelled_by_id
from benchmarks.structured_scoring import (
    normalise_text,
    score_fields,
    summarise_scores,
    value_matches,
)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("Maria Lopez", "maria lopez"),
        ("Maria Lopez", "  Maria   Lopez. "),
        ("Rockets", "The Rockets"),
        ("payment gateway", '"the payment gateway"'),
        (36, 36.0),
        (89.99, 89.99),
        ("2015", 2015),
        ("NW1 6XE", "nw1 6xe"),
        (("Amina Said", "Dr. Amina Said"), "Dr. Amina Said"),
        (["milk", "eggs"], ["Milk", "eggs."]),
        (True, True),
    ],
)
def test_right_values_match(expected: Any, actual: Any) -> None:
    assert value_matches(expected, actual)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("Maria Lopez", "Maria"),
        ("Amina Said", "Dr. Amina Said"),  # no alternatives given: a title is not ignored
        ("Valencia", "Valencia, Spain"),
        (36, 35),
        (36, "36"),  # a number field given text is wrong, whatever the text says
        (89.99, 90.0),
        (1, True),  # a boolean is never a number
        (True, 1),
        (["milk", "eggs"], ["eggs", "milk"]),
        (["milk", "eggs"], ["milk"]),
        (("Amina Said", "Dr. Amina Said"), "Amina"),
        ("negative", None),
    ],
)
def test_wrong_values_do_not_match(expected: Any, actual: Any) -> None:
    assert not value_matches(expected, actual)


def test_normalise_text_keeps_inner_punctuation() -> None:
    assert normalise_text("  The  ZX-4471. ") == "zx-4471"
    assert normalise_text("tom.becker@example.com") == "tom.becker@example.com"


def test_fields_are_scored_one_by_one() -> None:
    expected = {"name": "Maria Lopez", "age": 34, "city": "Valencia"}
    got = score_fields(expected, {"name": "Maria Lopez", "age": 43, "extra": 1})
    assert got == {"name": True, "age": False, "city": False}


def test_an_invalid_reply_scores_every_field_wrong() -> None:
    assert score_fields({"a": 1, "b": "x"}, None) == {"a": False, "b": False}


def test_summary_counts_invalid_replies_in_the_denominator() -> None:
    records = [
        {"valid": True, "fields": {"a": True, "b": True}},
        {"valid": True, "fields": {"a": True, "b": False}},
        {"valid": False, "fields": {"a": False, "b": False}},
    ]
    summary = summarise_scores(records)
    assert summary["calls"] == 3
    assert summary["valid_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert (summary["fields_right"], summary["fields"]) == (3, 6)
    assert summary["fields_right_share"] == 0.5
    assert summary["all_right_share"] == pytest.approx(1 / 3, abs=1e-4)


def test_summary_of_nothing_has_no_shares() -> None:
    summary = summarise_scores([])
    assert summary["calls"] == 0
    assert summary["fields_right_share"] is None


def test_every_labelled_task_expects_exactly_its_model_fields() -> None:
    assert len(labelled_by_id()) == len(LABELLED_TASKS) == 36
    for task in LABELLED_TASKS:
        assert task.task_class in LABELLED_CLASSES
        assert set(task.expected) == set(task.model.model_fields), task.task_id


def test_each_expected_answer_validates_and_scores_fully_right() -> None:
    """The labels themselves are instances of their models, so a right reply is possible."""
    for task in LABELLED_TASKS:
        first = {k: v[0] if isinstance(v, tuple) else v for k, v in task.expected.items()}
        value = task.model.model_validate(first).model_dump(mode="json")
        assert all(score_fields(task.expected, value).values()), task.task_id


def test_score_ignores_the_value_of_an_invalid_record() -> None:
    task = labelled_by_id()["ar-eggs"]
    records = [
        {"task_id": "ar-eggs", "valid": False, "value": {"total": 36}},
        {"task_id": "ar-eggs", "valid": True, "value": {"total": 36}},
    ]
    scored = score(records, [task])
    assert [r["fields"] for r in scored] == [{"total": False}, {"total": True}]


def _summary(ours: float, instructor: float, valid: float = 1.0) -> dict[str, Any]:
    row = {"fields_right_share": ours, "valid_share": valid}
    other = {"fields_right_share": instructor, "valid_share": 1.0}
    return {
        "ours": {c: dict(row) for c in (*LABELLED_CLASSES, "overall")},
        "instructor": {c: dict(other) for c in (*LABELLED_CLASSES, "overall")},
    }


def test_verdicts_need_both_models_and_every_class_strictly_ahead() -> None:
    met = verdicts({"m1": _summary(0.8, 0.7), "m2": _summary(0.5, 0.4)})
    assert met["valid_met"]
    assert met["ahead_met"]

    tie = verdicts({"m1": _summary(0.8, 0.7), "m2": _summary(0.5, 0.5)})
    assert not tie["ahead_met"]
    assert {g["model"] for g in tie["not_ahead"]} == {"m2"}

    invalid = verdicts({"m1": _summary(0.8, 0.7), "m2": _summary(0.5, 0.4, valid=0.98)})
    assert invalid["ahead_met"]
    assert not invalid["valid_met"]
