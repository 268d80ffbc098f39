"""A smoke run of the benchmark machinery (the real runs are `make bench`, not tests).

It starts the real processes (upstream, our gateway, the load generator, the SDK and
client floors) for a fraction of a second per target and checks that every target answered
without error and that the report renders, so `make bench` cannot rot unnoticed; and that
a target which completes nothing is reported as failing, never as an error-free row.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from benchmarks import latency, loadgen, report

pytestmark = pytest.mark.timeout(180)

LEVELS = ("1", "2")


def test_quick_run_measures_every_target_without_errors(tmp_path: Path) -> None:
    plan = latency.Plan(
        levels=(1, 2),
        duration=0.5,  # longer than a stream (20 chunks, 20 ms apart)
        warmup=0.1,
        held_streams=20,
        with_litellm=False,
        knee_levels=(1, 2),
        knee_duration=0.2,
        one_client_stream_factor=1,
        sdk_levels=(1,),
        warm_streams=1,
        hold_seconds=1.0,
    )
    result = latency.run(plan, log=lambda _line: None)

    for kind in ("non_stream", "stream"):
        for level in LEVELS:
            row = result[kind][level]
            assert set(row) == {"direct", "facade", "llm-api"}
            for name, cell in row.items():
                assert cell["failed"] == 0, (kind, level, name, cell["error_samples"])
                assert cell["requests"] > 0, (kind, level, name)
                if kind == "stream":  # every token relayed, none merged or lost
                    assert cell["tokens_min"] == latency.STREAM_CHUNKS, (level, name)
    floors = result["sdk_floor"]
    assert {(f["concurrency"], f["transport"], f["call"]) for f in floors} == {
        (1, t, call)
        for t, call in (("aiohttp", "create"), ("httpx", "create"), ("aiohttp", "post"))
    }
    assert all(f["rps"] > 0 for f in floors)
    clients = result["client_floor"]
    assert set(clients) == {
        f"{client} {kind} c={c}"
        for client in ("sdk", "ours")
        for kind in ("text", "stream")
        for c in (1, 2)
    }
    assert all(cell["calls_s"] > 0 for cell in clients.values())
    assert "| 2 | stream |" in report.client_table(result)
    held = result["memory"]["held_streams"]["ours"]
    assert (held["open"], held["errors"]) == (20, 0)
    assert held["held_mib"] >= held["idle_mib"] > 0
    knee = result["knee"]
    assert set(knee["levels"]) == set(LEVELS)
    assert knee["knee"] in (1, 2)
    assert knee["below"] in (1, 2)
    assert knee["knee_rps"] > 0

    assert "| 2 | ours: `/v1/chat/completions` |" in report.non_stream_table(result)
    assert "added per chunk" in report.stream_table(result)
    assert "ours (1 worker)" in report.memory_table(result)
    assert report.knee_table(result).count("\n") == 1 + len(LEVELS)
    verdicts = report.targets(result)
    for goal in (
        "sequential added latency",
        "50 clients: >= 2,000 req/s",
        "below saturation; the knee",
        "added time to first token",
        "RSS idle < 100 MiB",
        "20 open streams with RSS < 300 MB",
        "structured output",
    ):
        assert goal in verdicts
    # Every goal has a verdict; those this plan cannot measure say so.
    assert all(
        line.endswith(("| met |", "**not met** |", "**not measured** |"))
        for line in verdicts.splitlines()[2:]
    )
    assert "LiteLLM not run" in verdicts
    assert "| 50 clients: >= 2,000 req/s | level not in this run | **not measured** |" in verdicts
    report.plot(result, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback port whose connections are taken but never answered."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel completes the handshakes; nobody ever reads
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1/chat/completions"


def _silent_run(url: str, request_timeout: float) -> dict[str, Any]:
    record = uvloop.run(
        loadgen.closed_loop(
            url,
            {},
            b"{}",
            concurrency=2,
            duration=0.3,
            warmup=0.1,
            stream=False,
            request_timeout=request_timeout,
        )
    )
    return latency.summarize(record.__dict__, stream=False)


def test_a_target_that_completes_nothing_shows_its_failures(silent_url: str) -> None:
    timed_out = _silent_run(silent_url, request_timeout=0.15)
    assert timed_out["requests"] == 0
    assert timed_out["timeouts"] == timed_out["errors"] == timed_out["failed"] >= 2
    # Requests that outlast the whole window are counted too, not dropped as warm-up.
    stuck = _silent_run(silent_url, request_timeout=0.8)
    assert (stuck["requests"], stuck["errors"], stuck["unfinished"]) == (0, 0, 2)
    assert stuck["failed"] == 2

    result = _result_with_facade(stuck)
    table = report.non_stream_table(result)
    assert "| **none completed** | **2** (2 unfinished) |" in table
    assert "| 0 |" not in table.splitlines()[3]  # never an error-free row
    verdicts = report.targets(result)
    assert "completed none (**2** (2 unfinished) failed) | **not measured** |" in verdicts
    assert "| met |" not in verdicts.split("sequential")[1].splitlines()[0]
    assert "nothing" not in report.knee_line(result)


def _result_with_facade(facade: dict[str, Any]) -> dict[str, Any]:
    """A run's result in which the facade got `facade` at 1 and 50 clients."""
    direct = {
        **facade,
        "requests": 100,
        "errors": 0,
        "timeouts": 0,
        "unfinished": 0,
        "failed": 0,
        "rps": 1000.0,
        "p50": 0.1,
        "p95": 0.1,
        "p99": 0.2,
    }
    row = {"direct": direct, "facade": facade}
    stream_cell = {
        "ttft_p50": float("nan"),
        "ttft_p99": float("nan"),
        "gap_p99": float("nan"),
        "jitter": float("nan"),
        "tokens_min": 0,
    }
    return {
        "plan": {},
        "non_stream": {"1": copy.deepcopy(row), "50": copy.deepcopy(row)},
        "stream": {"1": {name: {**cell, **stream_cell} for name, cell in row.items()}},
        "knee": {"levels": {"1": row}, **latency.find_knee({"1": row})},
        "memory": {"idle_mib": {"ours": 90.0}},
    }
