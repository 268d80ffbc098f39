"""The serving section's report: best round per setup, scaling ratio, propagation table.
(The runs themselves are `make bench-serving`; tests/deploy covers the processes it drives.)"""

from __future__ import annotations

from typing import Any

from benchmarks import serving


def row(server: str, workers: int, rps: float, round_no: int) -> dict[str, Any]:
    level = {"rps": rps, "p50": 10.0, "p99": 20.0, "errors": 0}
    return {
        "server": server,
        "workers": workers,
        "round": round_no,
        "c1": level,
        "c50": level,
        "stream": {**level, "ttft_p50": 5.0},
        "idle_rss_mib": 120.0,
        "loaded_rss_mib": 150.0,
        "cpu_share": 0.9,
    }


def test_report_keeps_the_best_round_and_states_the_scaling() -> None:
    result = {
        "plan": {"duration": 3.0},
        "rounds": 2,
        "runs": [
            row("uvicorn", 1, 400, 0),
            row("uvicorn", 1, 500, 1),
            row("uvicorn", 2, 750, 0),
            row("granian", 1, 450, 0),
            row("granian", 2, 900, 0),
        ],
        "propagation": {"normal": {"p50_ms": 20, "p95_ms": 40, "max_ms": 50, "changes": 20}},
    }
    chosen = serving.best(result)
    assert [(r["server"], r["workers"], r["c50"]["rps"]) for r in chosen] == [
        ("granian", 1, 450),
        ("uvicorn", 1, 500),
        ("granian", 2, 900),
        ("uvicorn", 2, 750),
    ]
    text = serving.to_markdown(result)
    assert "- uvicorn: 2 workers serve 1.50x one worker's req/s at 50 clients." in text
    assert "- granian: 2 workers serve 2.00x" in text
    assert "| normal | 20 | 20 | 40 | 50 |" in text
    assert "noisy" in text
