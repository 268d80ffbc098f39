"""A smoke run of benchmarks/ledger_cost.py (the real run is by hand), so it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_run_prints_both_figures() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.ledger_cost", "--calls", "200", "--rounds", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    figures = re.findall(
        r"^(submit, per call|write, per row) +CPU µs: median [\d.]+", run.stdout, re.M
    )
    assert figures == ["submit, per call", "write, per row"], run.stdout
