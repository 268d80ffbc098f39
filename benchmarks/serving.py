"""Serving on PostgreSQL: 1 vs 2 workers, uvicorn vs Granian, and settings propagation.

python -m benchmarks serving            # alone (~8 minutes), writes benchmarks/out/serving.json
                                        # and the "Serving" section of RESULTS.md

Everything shares the 2-core machine: the load generator, the upstream, PostgreSQL (a
private server, so that it can be restarted) and the gateway's workers. The servers are
measured one after another in rounds (uvicorn and Granian side by side in each round), and
the best round of each is kept; the machine is shared, so the figures are noisy.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from benchmarks.latency import CHAT_BODY, MODEL, Plan, Target, percentile, run_load, summarize
from benchmarks.processes import Gateway, Upstream
from tests.deploy.private_postgres import PrivatePostgres, postgres_bin
from tests.deploy.propagation import (
    measure,
    terminate_listeners,
    two_processes,
    wait_for_listeners,
)

OUT = Path(__file__).resolve().parent / "out"
SERVERS = ("uvicorn", "granian")
WORKERS = (1, 2)
CLIENTS = 50


def command(server: str, workers: int) -> list[str]:
    """The production command for `server` with `workers` workers (`{port}` left open)."""
    if server == "uvicorn":
        return [sys.executable, "-m", "app", "serve", "--port", "{port}",
                "--workers", str(workers), "--no-access-log"]  # fmt: skip
    granian = str(Path(sys.executable).parent / "granian")
    return [granian, "--interface", "asgi", "--factory", "--host", "127.0.0.1",
            "--port", "{port}", "--workers", str(workers), "--loop", "uvloop",
            "--no-access-log", "app.main:create_app"]  # fmt: skip


def tree_usage(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process and its children."""
    root = psutil.Process(pid)
    rss, cpu = 0.0, 0.0
    for process in [root, *root.children(recursive=True)]:
        rss += process.memory_info().rss
        times = process.cpu_times()
        cpu += times.user + times.system
    return rss / 2**20, cpu


def one_server(
    server: str, workers: int, upstream_url: str, database_url: str, plan: Plan
) -> dict[str, Any]:
    """Throughput and latency at 1 and CLIENTS clients, plus a stream run, for one setup."""
    with Gateway(
        upstream_url, MODEL, serve=command(server, workers), DATABASE_URL=database_url
    ) as gateway:
        url = f"{gateway.url}/v1/chat/completions"
        target = Target(server, url, gateway.headers, CHAT_BODY, url, {**CHAT_BODY, "stream": True})
        for _ in range(2):  # warm every worker's pools and lazy imports
            run_load(target.url, target.headers, target.body, 8, Plan(duration=0.5, warmup=0.2))
        idle_rss, cpu_before = tree_usage(gateway.pid)
        started = time.monotonic()
        row: dict[str, Any] = {"server": server, "workers": workers, "idle_rss_mib": idle_rss}
        for clients in (1, CLIENTS):
            _, cpu_start = tree_usage(gateway.pid)
            record = run_load(target.url, target.headers, target.body, clients, plan)
            row[f"c{clients}"] = _trim(summarize(record, stream=False))
            # The machine is shared: what a server gets done per CPU-second it was given
            # compares servers fairly even when the scheduler favours one (more threads).
            cpu_seconds = tree_usage(gateway.pid)[1] - cpu_start
            row[f"c{clients}"]["per_cpu_second"] = (
                len(record["latencies_ms"]) / cpu_seconds if cpu_seconds else 0.0
            )
        record = run_load(
            target.stream_url, target.headers, target.stream_body, CLIENTS, plan, stream=True
        )
        row["stream"] = _trim(summarize(record, stream=True))
        loaded_rss, cpu_after = tree_usage(gateway.pid)
        row["loaded_rss_mib"] = loaded_rss
        row["cpu_share"] = (cpu_after - cpu_before) / (time.monotonic() - started)
    return row


def _trim(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not k.endswith("samples")}


async def propagation(pg: PrivatePostgres, upstream_url: str, changes: int) -> dict[str, Any]:
    """p50/max (ms) of `changes` settings changes per case, across two serve processes."""
    work = OUT / "serving-logs"
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    async with two_processes(pg, upstream_url, work) as (writer, reader):
        await wait_for_listeners(pg, 2)

        async def kill() -> None:
            await wait_for_listeners(pg, 2)
            await terminate_listeners(pg)

        async def restart() -> None:
            await asyncio.to_thread(pg.restart)

        cases = {
            "normal": await measure(writer, reader, changes),
            "listener killed before each change": await measure(writer, reader, changes, kill),
            "PostgreSQL restarted before each change": await measure(
                writer, reader, changes, restart
            ),
        }
    return {
        name: {
            "p50_ms": 1000 * statistics.median(delays),
            "p95_ms": 1000 * percentile(delays, 95),
            "max_ms": 1000 * max(delays),
            "changes": len(delays),
        }
        for name, delays in cases.items()
    }


def run(
    rounds: int = 2, plan: Plan = Plan(), changes: int = 20, log: Any = print
) -> dict[str, Any]:
    """The whole serving benchmark; a JSON-able result."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL server binaries not found under /usr/lib/postgresql")
    result: dict[str, Any] = {"plan": plan.__dict__, "rounds": rounds, "runs": []}
    with PrivatePostgres(bin_dir) as pg, Upstream() as upstream:
        asyncio.run(pg.execute("CREATE DATABASE bench"))
        for round_no in range(rounds):
            for workers in WORKERS:
                for server in SERVERS:
                    row = one_server(server, workers, upstream.base_url, pg.url("bench"), plan)
                    row["round"] = round_no
                    result["runs"].append(row)
                    c50 = row[f"c{CLIENTS}"]
                    log(
                        f"round {round_no} {server} x{workers}: {CLIENTS} clients "
                        f"{c50['rps']:.0f} req/s p50 {c50['p50']:.1f} ms p99 {c50['p99']:.1f} ms; "
                        f"1 client {row['c1']['rps']:.0f} req/s; streams "
                        f"{row['stream']['rps']:.0f}/s; RSS {row['loaded_rss_mib']:.0f} MiB"
                    )
        result["propagation"] = asyncio.run(propagation(pg, upstream.base_url, changes))
        log(json.dumps(result["propagation"], indent=1))
    return result


def best(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (server, workers), the round with the highest 50-client throughput."""
    chosen: dict[tuple[str, int], dict[str, Any]] = {}
    for row in result["runs"]:
        key = (row["server"], row["workers"])
        if key not in chosen or row[f"c{CLIENTS}"]["rps"] > chosen[key][f"c{CLIENTS}"]["rps"]:
            chosen[key] = row
    return [chosen[key] for key in sorted(chosen, key=lambda k: (k[1], k[0]))]


def to_markdown(result: dict[str, Any]) -> str:
    """The "Serving" section of RESULTS.md."""
    rows = best(result)
    plan = result["plan"]
    lines = [
        f"`python -m benchmarks serving`: the facade (`/v1/chat/completions`, API key) on "
        f"PostgreSQL (a private server on loopback), {plan['duration']:g} s per level, "
        f"best of {result['rounds']} rounds; uvicorn and Granian alternate within each round. "
        "Load generator, upstream, PostgreSQL and the workers all share the 2 cores, and "
        "other work may be running on the machine: the figures are noisy (when this was "
        "committed, other sessions shared the machine and one setup's throughput varied up "
        "to 2x between rounds). *Requests per CPU-second* (the 50-client requests divided "
        "by the CPU time the server's processes used meanwhile) compares servers fairly "
        "when the scheduler gives one of them more of the machine.",
        "",
        f"| server | workers | 1 client req/s | 1 client p50 ms | {CLIENTS} clients req/s "
        f"| p50 ms | p99 ms | requests per CPU-second | {CLIENTS} streams/s "
        "| stream TTFT p50 ms | RSS idle MiB | RSS loaded MiB | CPU (cores) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        c1, c50, stream = row["c1"], row[f"c{CLIENTS}"], row["stream"]
        errors = c1["errors"] + c50["errors"] + stream["errors"]
        lines.append(
            f"| {row['server']} | {row['workers']} | {c1['rps']:.0f} | {c1['p50']:.2f} "
            f"| {c50['rps']:.0f} | {c50['p50']:.1f} | {c50['p99']:.1f} "
            f"| {c50.get('per_cpu_second', float('nan')):.0f} | {stream['rps']:.0f} "
            f"| {stream['ttft_p50']:.1f} | {row['idle_rss_mib']:.0f} | {row['loaded_rss_mib']:.0f} "
            f"| {row['cpu_share']:.2f} | {errors} |"
        )
    lines += ["", *scaling(rows), "", "### Settings propagation between two processes", ""]
    lines += [
        "Two `python -m app serve` processes on the private PostgreSQL; a change saved "
        "through one (PATCH /api/v1/llm-settings), timed from its response until the other "
        "returns it (polled every 10 ms).",
        "",
        "| case | changes | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, figures in result["propagation"].items():
        lines.append(
            f"| {name} | {figures['changes']} | {figures['p50_ms']:.0f} "
            f"| {figures['p95_ms']:.0f} | {figures['max_ms']:.0f} |"
        )
    return "\n".join(lines)


def scaling(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per server: the 2-worker / 1-worker throughput ratio at CLIENTS clients."""
    by_key = {(row["server"], row["workers"]): row for row in rows}
    found = []
    for server in SERVERS:
        one, two = by_key.get((server, 1)), by_key.get((server, 2))
        if one and two:
            ratio = two[f"c{CLIENTS}"]["rps"] / one[f"c{CLIENTS}"]["rps"]
            found.append(f"- {server}: 2 workers serve {ratio:.2f}x one worker's req/s at "
                         f"{CLIENTS} clients.")  # fmt: skip
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run, save the raw result, print the section."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks serving")
    parser.add_argument("--quick", action="store_true", help="one short round, 3 changes")
    args = parser.parse_args(argv)
    quick = dict(rounds=1, plan=Plan(duration=0.5, warmup=0.2), changes=3)
    result = run(**quick) if args.quick else run()  # type: ignore[arg-type]
    OUT.mkdir(exist_ok=True)
    (OUT / "serving.json").write_text(json.dumps(result))
    print(to_markdown(result))
    return 0
