"""A smoke run of the benchmark machinery (the real runs are `make bench`, not tests).

It starts the real processes (upstream, our gateway, the load generator, the SDK and
client floors) for a fraction of a second per target and checks that every target answered
without error and that the report renders, so `make bench` cannot rot unnoticed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import latency, report

pytestmark = pytest.mark.timeout(180)


def test_quick_run_measures_every_target_without_errors(tmp_path: Path) -> None:
    plan = latency.Plan(
        levels=(1, 4), duration=0.5, warmup=0.1, held_streams=20, with_litellm=False
    )
    result = latency.run(plan, log=lambda _line: None)

    for kind in ("non_stream", "stream"):
        for level in ("1", "4"):
            row = result[kind][level]
            assert set(row) == {"direct", "facade", "llm-api"}
            for name, cell in row.items():
                assert cell["errors"] == 0, (kind, level, name, cell["error_samples"])
                assert cell["requests"] > 0, (kind, level, name)
                if kind == "stream":  # every token relayed, none merged or lost
                    assert cell["tokens_min"] == latency.STREAM_CHUNKS, (level, name)
    floors = result["sdk_floor"]
    assert {(f["concurrency"], f["transport"], f["call"]) for f in floors} == {
        (c, t, call)
        for c in (1, 4)
        for t, call in (("aiohttp", "create"), ("httpx", "create"), ("aiohttp", "post"))
    }
    assert all(f["rps"] > 0 for f in floors)
    clients = result["client_floor"]
    assert set(clients) == {
        f"{client} {kind} c={c}"
        for client in ("sdk", "ours")
        for kind in ("text", "stream")
        for c in (1, 4)
    }
    assert all(cell["calls_s"] > 0 for cell in clients.values())
    assert "| 4 | stream |" in report.client_table(result)
    held = result["memory"]["held_streams"]["ours"]
    assert (held["open"], held["errors"]) == (20, 0)
    assert held["held_mib"] >= held["idle_mib"] > 0

    assert "| 4 | ours: `/v1/chat/completions` |" in report.non_stream_table(result)
    assert "added per chunk" in report.stream_table(result)
    assert "ours (1 worker)" in report.memory_table(result)
    verdicts = report.targets(result)
    assert "sequential added latency" in verdicts
    assert "20 open streams with RSS < 300 MB" in verdicts
    report.plot(result, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")
