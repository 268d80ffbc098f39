"""`make bench`'s policy cost: a short real run (so it cannot rot) and its table's verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import policy_cost

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def test_a_short_run_measures_the_database_store_at_both_levels(tmp_path: Path) -> None:
    out = tmp_path / "policy_cost.json"
    # The database store only: Redis's counters are tested in tests/api/v1/test_policies.py,
    # and a second pair of gateways would add ten seconds to `make test`.
    command = ["-m", "benchmarks.policy_cost", "--duration", "0.3", "--rounds", "1"]
    command += ["--redis-url", ""]
    run = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, *command, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["database"]["store"] == "SQLite"
    assert result["redis"] is None
    for level in ("1", "50"):
        row = result["database"]["levels"][level]
        assert row["without"]["requests"] > 0, row
        assert row["policy"]["requests"] > 0, row
        assert row["without"]["failed"] == row["policy"]["failed"] == 0, row
    assert run.stdout.count("| policy on SQLite ") == 2, run.stdout


def _level(added: float) -> dict[str, Any]:
    side = {"p50": 1.0, "rps": 1000.0}
    return {"without": side, "policy": side, "added_ms": added}


def test_the_table_gives_a_verdict_per_row_and_says_what_was_not_measured() -> None:
    result = {
        "plan": {"duration": 2.0, "rounds": 2},
        "database": {"store": "SQLite", "levels": {"1": _level(0.35), "50": _level(0.04)}},
        "redis": None,
    }
    text = policy_cost.to_markdown(result)
    assert "| policy on SQLite | 1 | 1.00 ms | 1000/s | +0.350 ms | not met |" in text
    assert "| policy on SQLite | 50 | 1.00 ms | 1000/s | +0.040 ms | met |" in text
    assert text.count("| policy on Redis | 50 | | | not measured | not measured |") == 1
    assert text.count("| no policy |") == 2
