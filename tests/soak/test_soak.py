"""A short soak (benchmarks/soak.py: 20 clients, 12 s, mixed traffic with PATCHes) in its
own processes. Asserts the invariants only: no unexpected error, every PATCH visible
afterwards, nothing left open. Timings and RSS drift are measured by `make soak`, not
asserted here (a 12 s run on a shared machine cannot judge them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.processes import ROOT

CLIENTS = 20


def test_short_soak_keeps_its_invariants(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "benchmarks.soak", "--clients", str(CLIENTS)]
    command += ["--duration", "12", "--patch-every", "1", "--health-seconds", "0"]
    command += ["--json", str(out), "--no-markdown"]
    run = subprocess.run(  # noqa: S603 - our own command line
        command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    print(json.dumps({k: results[k] for k in ("requests", "latency_ms", "rss_drift_pct")}))
    assert results["errors"] == 0, results["error_samples"]
    assert min(results["requests"][k] for k in ("generate", "stream", "structured")) > 0
    assert results["patches"] >= 5
    assert results["patches_visible"], (results["patch_versions"], results["final_settings"])
    assert results["streams_in_flight_after"] == 0
    # Pooled keep-alive connections may stay open, but never more than one per client: the
    # CLIENTS callers, plus the admin whose settings saves ask the upstream for its models
    # (to warn about a model it does not offer).
    assert results["upstream_connections_after"] <= CLIENTS + 1
    if results["database"] == "postgresql":
        assert results["db_connections_after"] <= 15  # SQLAlchemy's pool: 5 + 10 overflow
