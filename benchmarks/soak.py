"""Soak: mixed traffic at N concurrent clients for T seconds against the stand-in, then the
health check's p99 with and without hostile JSON schemas arriving at /llm/structured.

    python -m benchmarks.soak                       # 100 clients, 60 s: writes benchmarks/SOAK.md
    python -m benchmarks.soak --clients 20 --duration 30 --json out.json --no-markdown

Processes: the stand-in LM Studio (`python -m tests.upstream`), the app (`Gateway`, one
worker, on a fresh PostgreSQL database when one is reachable, else SQLite) and this driver.
Traffic: generate, stream, structured and settings reads from every client, and one admin
PATCHing the settings every few seconds. Invariants (what `tests/soak` asserts): no
unexpected error, every PATCH visible afterwards, nothing left open. Measured, not asserted:
latency percentiles per kind, the app's RSS drift after warm-up, health-check p99s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import psutil

from benchmarks.processes import ROOT, Gateway, free_port, stop, wait_until

MODELS = ("llama-3.2-3b-instruct", "mistral-7b-instruct")
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
# Catastrophic backtracking for a naive regex engine, given a long run of "a" and a "!".
CATASTROPHIC = {
    "type": "object",
    "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
    "required": ["s"],
}
# Long enough to cost a backtracking matcher seconds (2**24 steps), short enough to end.
HOSTILE_RUN = 24
SELF_REFERENCE = {"$ref": "#/$defs/node", "$defs": {"node": {"$ref": "#/$defs/node"}}}
WEIGHTS = {"generate": 3, "stream": 3, "structured": 2, "settings": 2}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@dataclass
class Results:
    """What one soak observed; `tests/soak` asserts on the invariants."""

    clients: int
    duration_s: float
    database: str
    commit: str = "unknown"
    requests: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    patches: int = 0
    patch_versions: list[int] = field(default_factory=list)
    patches_visible: bool = False
    final_settings: dict[str, Any] = field(default_factory=dict)
    rss_mb: list[float] = field(default_factory=list)
    rss_drift_pct: float = 0.0
    upstream_connections_after: int = 0
    db_connections_after: int = 0
    streams_in_flight_after: float = 0.0
    health_p99_ms: dict[str, float] = field(default_factory=dict)
    hostile_answers: dict[str, list[int]] = field(default_factory=dict)


def _commit() -> str:
    """The checkout's short commit, with `+` when it has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain") else "")


# ── the processes ─────────────────────────────────────────────────────────────


class StandIn:
    """`python -m tests.upstream` in a process of its own (echo replies, schema-valid JSON)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StandIn:
        command = [sys.executable, "-m", "tests.upstream", "--port", str(self.port)]
        command += ["--stream-chunks", "20", "--chunk-interval-ms", "5", "--max-records", "10"]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        wait_until("the stand-in", f"{self.base_url}/models", self.process, time.monotonic() + 60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop(self.process)


async def _scratch_database() -> str | None:
    """A new PostgreSQL database (dropped by `_drop`), or None when PostgreSQL is unreachable."""
    name = f"soak_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(POSTGRES, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _backends(name: str) -> int:
    conn = await asyncpg.connect(POSTGRES, timeout=5)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
        )
        return int(count)
    finally:
        await conn.close()


def _database_url(name: str | None) -> dict[str, str]:
    if name is None:
        return {}
    base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return {"DATABASE_URL": f"{base}/{name}"}


def _admin_headers(gateway: Gateway) -> dict[str, str]:
    from benchmarks.processes import ADMIN_EMAIL, ADMIN_PASSWORD

    login = httpx.post(
        f"{gateway.url}/api/v1/login/access-token",
        data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    login.raise_for_status()
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


# ── the mixed traffic ─────────────────────────────────────────────────────────


class Traffic:
    """Closed-loop clients of mixed kinds plus one admin PATCHing every `patch_every` s."""

    def __init__(self, gateway: Gateway, admin: dict[str, str], results: Results) -> None:
        self.gateway = gateway
        self.admin = admin
        self.results = results
        self.latencies: dict[str, list[float]] = {kind: [] for kind in [*WEIGHTS, "patch"]}

    def error(self, message: str) -> None:
        self.results.errors += 1
        if len(self.results.error_samples) < 10:
            self.results.error_samples.append(message[:300])

    async def one(self, session: aiohttp.ClientSession, kind: str, n: int) -> None:
        url = self.gateway.url
        headers = self.gateway.headers
        started = time.perf_counter()
        try:
            if kind == "settings":
                async with session.get(f"{url}/api/v1/llm-settings", headers=self.admin) as r:
                    body = await r.read()
            elif kind == "stream":
                payload = {"prompt": f"soak {n} one two three"}
                async with session.post(
                    f"{url}/api/v1/llm/stream", json=payload, headers=headers
                ) as r:
                    body = await r.read()
                    if r.status == 200 and b"event: done" not in body:
                        self.error(f"stream without done: {body[-200:]!r}")
                        return
            else:
                payload: dict[str, Any] = {"prompt": f"soak {n}"}
                if kind == "structured":
                    payload["schema"] = SCHEMA
                async with session.post(
                    f"{url}/api/v1/llm/{kind}", json=payload, headers=headers
                ) as r:
                    body = await r.read()
            if r.status != 200:
                self.error(f"{kind}: HTTP {r.status}: {body[:200]!r}")
                return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.error(f"{kind}: {type(exc).__name__}: {exc}")
            return
        self.latencies[kind].append((time.perf_counter() - started) * 1000)

    async def client(self, session: aiohttp.ClientSession, seed: int, stop_at: float) -> None:
        rng = random.Random(seed)
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            await self.one(session, rng.choices(kinds, weights)[0], n)

    async def patcher(self, session: aiohttp.ClientSession, every: float, stop_at: float) -> None:
        n = 0
        while time.monotonic() + every < stop_at:
            await asyncio.sleep(every)
            model = MODELS[n % 2]
            n += 1
            started = time.perf_counter()
            try:
                async with session.patch(
                    f"{self.gateway.url}/api/v1/llm-settings",
                    json={"lmstudio_model": model},
                    headers=self.admin,
                ) as r:
                    body = await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.error(f"patch: {type(exc).__name__}: {exc}")
                continue
            if r.status != 200 or body.get("lmstudio_model") != model:
                self.error(f"patch: HTTP {r.status}: {str(body)[:200]}")
                continue
            self.latencies["patch"].append((time.perf_counter() - started) * 1000)
            self.results.patches += 1
            self.results.patch_versions.append(int(body["version"]))

    async def sample_rss(self, stop_at: float) -> None:
        process = psutil.Process(self.gateway.pid)
        while time.monotonic() < stop_at:
            self.results.rss_mb.append(process.memory_info().rss / 2**20)
            await asyncio.sleep(1.0)

    async def run(self, clients: int, duration: float, patch_every: float) -> None:
        connector = aiohttp.TCPConnector(limit=clients + 2)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            stop_at = time.monotonic() + duration
            await asyncio.gather(
                *(self.client(session, seed, stop_at) for seed in range(clients)),
                self.patcher(session, patch_every, stop_at),
                self.sample_rss(stop_at),
            )
        for kind, values in self.latencies.items():
            self.results.requests[kind] = len(values)
            self.results.latency_ms[kind] = {
                "p50": round(percentile(values, 50), 1),
                "p99": round(percentile(values, 99), 1),
                "max": round(max(values, default=0.0), 1),
            }


def _check_patches(gateway: Gateway, admin: dict[str, str], results: Results) -> None:
    """Each PATCH got the next version, and the last one is what every read now shows."""
    final = httpx.get(f"{gateway.url}/api/v1/llm-settings", headers=admin, timeout=30).json()
    results.final_settings = final
    versions = results.patch_versions
    consecutive = all(b == a + 1 for a, b in itertools.pairwise(versions))
    last_model = MODELS[(results.patches - 1) % 2] if results.patches else None
    results.patches_visible = (
        results.patches > 0
        and consecutive
        and final.get("version") == versions[-1]
        and final.get("lmstudio_model") == last_model
    )


def _upstream_connections(gateway: Gateway, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(gateway.pid).net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == "ESTABLISHED"
    )


def _streams_in_flight(gateway: Gateway) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llm_streams_in_flight{")
    )


# ── health p99 with and without hostile schemas ───────────────────────────────


HEALTH_TIMEOUT_S = 30.0  # a health check slower than this counts as this long


async def _health_p99(url: str, clients: int, seconds: float) -> float:
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        stop_at = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    async with session.get(f"{url}/api/v1/health") as r:
                        await r.read()
                except (aiohttp.ClientError, TimeoutError):
                    latencies.append(HEALTH_TIMEOUT_S * 1000)
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(loop() for _ in range(clients)))
    return round(percentile(latencies, 99), 1)


async def _hostile(
    url: str, headers: dict[str, str], schema: dict[str, Any], stop: asyncio.Event
) -> list[int]:
    statuses: list[int] = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            body = {"prompt": "hostile", "schema": schema}
            try:
                async with session.post(
                    f"{url}/api/v1/llm/structured", json=body, headers=headers
                ) as r:
                    await r.read()
                    statuses.append(r.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses.append(-1)
                print(f"hostile request failed: {exc!r}", file=sys.stderr)
    return statuses


async def hostile_schema_p99s(
    gateway: Gateway, clients: int, seconds: float, results: Results
) -> None:
    """Health p99 alone, then while hostile schemas arrive (one sender per schema)."""
    results.health_p99_ms["quiet"] = await _health_p99(gateway.url, clients, seconds)
    for name, schema in (("catastrophic_pattern", CATASTROPHIC), ("self_ref", SELF_REFERENCE)):
        stop_event = asyncio.Event()
        sender = asyncio.create_task(_hostile(gateway.url, gateway.headers, schema, stop_event))
        await asyncio.sleep(0.5)
        results.health_p99_ms[name] = await _health_p99(gateway.url, clients, seconds)
        stop_event.set()
        try:
            results.hostile_answers[name] = await asyncio.wait_for(sender, 150)
        except TimeoutError:
            results.hostile_answers[name] = [-2]  # the sender never came back


def _hostile_upstream() -> Any:
    """A stand-in in this process that answers every chat with a long string that almost
    matches `^(a+)+$`: a backtracking matcher takes exponential time on it."""
    from tests.upstream import StandInServer

    server = StandInServer()
    server.start()
    server.reply_json({"s": "a" * HOSTILE_RUN + "!"}, times=None)
    return server


# ── the run ───────────────────────────────────────────────────────────────────


def run(clients: int, duration: float, patch_every: float, health_seconds: float) -> Results:
    """Start everything, soak, check the invariants, measure the health p99s."""
    database = asyncio.run(_scratch_database())
    results = Results(clients, duration, "postgresql" if database else "sqlite", _commit())
    try:
        with (
            StandIn() as upstream,
            Gateway(
                upstream.base_url, MODELS[0], LLM_MAX_CONCURRENCY="2000", **_database_url(database)
            ) as gateway,
        ):
            admin = _admin_headers(gateway)
            asyncio.run(Traffic(gateway, admin, results).run(clients, duration, patch_every))
            _check_patches(gateway, admin, results)
            time.sleep(2)  # let keep-alive pools settle
            results.upstream_connections_after = _upstream_connections(gateway, upstream.port)
            results.streams_in_flight_after = _streams_in_flight(gateway)
            if database:
                results.db_connections_after = asyncio.run(_backends(database))
            rss = results.rss_mb
            warm = rss[min(len(rss) - 1, max(1, len(rss) // 6))] if rss else 0.0
            results.rss_drift_pct = round((rss[-1] - warm) / warm * 100, 1) if warm else 0.0
        if health_seconds > 0:
            hostile = _hostile_upstream()
            try:
                with Gateway(hostile.base_url, MODELS[0], **_database_url(None)) as gateway:
                    asyncio.run(hostile_schema_p99s(gateway, 20, health_seconds, results))
            finally:
                hostile.stop()
    finally:
        if database:
            asyncio.run(_drop(database))
    return results


def markdown(results: Results) -> str:
    """benchmarks/SOAK.md."""
    r = results
    lines = [
        "# Soak",
        "",
        "Written by `make soak` (`python -m benchmarks.soak`) at commit "
        f"`{r.commit}`. One 2-core machine runs the app, PostgreSQL, the stand-in and the "
        "load generator together, so latencies include their contention.",
        "",
        f"Mixed traffic from {r.clients} concurrent clients for {r.duration_s:.0f} s against the "
        f"stand-in LM Studio (`python -m tests.upstream`), the app on {r.database}, one worker.",
        "",
        "| kind | requests | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, figures in r.latency_ms.items():
        lines.append(
            f"| {kind} | {r.requests[kind]} | {figures['p50']} | {figures['p99']} "
            f"| {figures['max']} |"
        )
    lines += [
        "",
        f"- Unexpected errors: **{r.errors}**"
        + (f" (e.g. `{r.error_samples[0]}`)" if r.errors else ""),
        f"- PATCHes: {r.patches}, versions consecutive and the last one visible to every read "
        f"afterwards: **{'yes' if r.patches_visible else 'NO'}**",
        f"- RSS: {r.rss_mb[0]:.0f} MB at start, {max(r.rss_mb):.0f} MB peak, {r.rss_mb[-1]:.0f} MB "
        f"at the end; drift after warm-up **{r.rss_drift_pct} %** (target ≤ 20 %)"
        if r.rss_mb
        else "- RSS: not sampled",
        f"- After the run: {r.upstream_connections_after} open connections to the upstream "
        f"(pooled keep-alive), {r.db_connections_after} PostgreSQL backends for the app's "
        f"database, {r.streams_in_flight_after:.0f} streams in flight.",
        "",
        "## Health checks under hostile JSON schemas",
        "",
        "p99 of `GET /api/v1/health` from 20 concurrent clients, alone and while one sender "
        "after another posts a hostile schema to `/api/v1/llm/structured` (the stand-in "
        f'replies `{{"s": "{HOSTILE_RUN} x a, then !"}}`). A health check slower than '
        f"{HEALTH_TIMEOUT_S:.0f} s counts as {HEALTH_TIMEOUT_S:.0f} s. Status -1: the "
        "request failed without an HTTP answer (e.g. the connection was reset).",
        "",
        "| while | health p99 ms | structured answers (status codes) |",
        "| --- | ---: | --- |",
    ]
    for name, p99 in r.health_p99_ms.items():
        answers = r.hostile_answers.get(name, [])
        summary = ", ".join(f"{code}x{answers.count(code)}" for code in sorted(set(answers)))
        lines.append(f"| {name.replace('_', ' ')} | {p99} | {summary or '—'} |")
    lines += [
        "",
        "Schemas: catastrophic pattern `"
        + json.dumps(CATASTROPHIC)
        + "`; self-reference `"
        + json.dumps(SELF_REFERENCE)
        + "`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run, write the results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--patch-every", type=float, default=3.0)
    parser.add_argument("--health-seconds", type=float, default=10.0, help="0 skips them")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "SOAK.md")
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.clients, args.duration, args.patch_every, args.health_seconds)
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=2))
    if not args.no_markdown:
        args.markdown.write_text(markdown(results))
    print(json.dumps({k: v for k, v in asdict(results).items() if k != "rss_mb"}, indent=2))


if __name__ == "__main__":
    main()
