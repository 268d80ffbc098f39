"""What a policy costs per request: the facade called with a key that has a policy
(requests per minute, tokens per minute, an allow-list) against one without, side by side.

python -m benchmarks.policy_cost [--duration 2] [--rounds 2] [--database-url URL]
                                 [--redis-url redis://127.0.0.1:6379/0] [--json PATH]

Alternating A/B runs at 1 and 50 clients: on one gateway counting in the database (SQLite
by default, as `make bench` runs it), then on one counting in Redis (skipped when Redis
cannot be reached; `--redis-url ""` skips it). The added milliseconds per request: at 1
client the p50 difference; at 50 clients the difference in time per request, 1/rps (the
CPU a request costs the saturated worker). `make bench` runs it into `out/policy_cost.json`.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from benchmarks.latency import CHAT_BODY, MODEL, Plan, run_load, summarize
from benchmarks.processes import ADMIN_EMAIL, ADMIN_PASSWORD, Gateway, Upstream

POLICY = {
    "allowed_models": [f"lmstudio/{MODEL}", "lmstudio/other-model", "openai/*"],
    "requests_per_minute": 1_000_000_000,
    "tokens_per_minute": 1_000_000_000,
}
GOAL_MS = 0.1
"""The goal: a policy adds at most this much per request."""
LEVELS = (1, 50)
REDIS_URL = "redis://127.0.0.1:6379/0"


def key_with_policy(gateway: Gateway, policy: dict[str, Any]) -> dict[str, str]:
    """Headers with a new API key of the admin's, given `policy`."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        login = client.post(
            "/api/v1/login/access-token",
            data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        )
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = client.post("/api/v1/api-keys", json={"name": "policy"}, headers=admin)
        key = created.json()
        client.patch(
            f"/api/v1/api-keys/{key['id']}", json={"policy": policy}, headers=admin
        ).raise_for_status()
    return {"Authorization": f"Bearer {key['key']}"}


def measure(upstream: Upstream, plan: Plan, rounds: int, **env: str) -> dict[str, Any]:
    """Per level: the best run of each side (no policy, policy) and the added ms."""
    with Gateway(upstream.base_url, MODEL, **env) as gateway:
        sides = {"without": gateway.headers, "policy": key_with_policy(gateway, POLICY)}
        url = f"{gateway.url}/v1/chat/completions"
        for headers in sides.values():  # warm both
            with httpx.Client(headers=headers, timeout=30) as client:
                for _ in range(20):
                    client.post(url, json=CHAT_BODY).raise_for_status()
        levels: dict[str, Any] = {}
        for level in LEVELS:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
            for _ in range(rounds):
                for name, headers in sides.items():
                    record = run_load(url, headers, CHAT_BODY, level, plan)
                    summary = summarize(record, stream=False)
                    summary.pop("samples", None)
                    runs[name].append(summary)
            best = {n: max(r, key=lambda s: s["rps"]) for n, r in runs.items()}
            a, b = best["without"], best["policy"]
            added = b["p50"] - a["p50"] if level == 1 else 1000 / b["rps"] - 1000 / a["rps"]
            levels[str(level)] = {**best, "added_ms": added}
    return levels


def reachable(redis_url: str) -> bool:
    """Whether something listens at `redis_url`'s host and port."""
    parts = urlsplit(redis_url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1).close()
    except OSError:
        return False
    return True


def run(
    duration: float = 2.0,
    rounds: int = 2,
    database_url: str | None = None,
    redis_url: str | None = REDIS_URL,
) -> dict[str, Any]:
    """Both stores' figures (Redis's None when it is not reachable)."""
    plan = Plan(duration=duration, warmup=0.5)
    env = {"DATABASE_URL": database_url} if database_url else {}
    store = "PostgreSQL" if database_url and database_url.startswith("postgres") else "SQLite"
    result: dict[str, Any] = {"plan": {"duration": duration, "rounds": rounds}}
    with Upstream(20, 0.0) as upstream:
        result["database"] = {"store": store, "levels": measure(upstream, plan, rounds, **env)}
        result["redis"] = None
        if redis_url and reachable(redis_url):
            levels = measure(upstream, plan, rounds, **env, REDIS_URL=redis_url)
            result["redis"] = {"store": "Redis", "levels": levels}
    return result


def to_markdown(result: dict[str, Any]) -> str:
    """The table of `make bench`'s section "What accounting and limits cost"."""
    plan = result["plan"]
    lines = [
        f"A key with a policy (requests and tokens per minute, a 3-entry allow-list) against "
        f"one without, on the facade, one worker, alternating ({plan['rounds']} rounds of "
        f"{plan['duration']:g} s per side and level, the best of each). *Added*: at 1 client "
        "the p50 difference, at 50 the difference in time per request (1/throughput). "
        f"Goal: at most {GOAL_MS:g} ms per request.",
        "",
        "Each store's gateway has its own no-policy runs; the *no policy* row is the "
        "database gateway's.",
        "",
        "| Caller | Clients | p50 | Throughput | Added per request | Goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    database, redis = result["database"], result.get("redis")
    for level in map(str, LEVELS):
        base = database["levels"][level]["without"]
        lines.append(f"| no policy | {level} | {base['p50']:.2f} ms | {base['rps']:.0f}/s | | |")
        for side in (database, redis):
            if side is None:
                lines.append(f"| policy on Redis | {level} | | | not measured | not measured |")
                continue
            row = side["levels"][level]
            verdict = "met" if row["added_ms"] <= GOAL_MS else "not met"
            lines.append(
                f"| policy on {side['store']} | {level} | {row['policy']['p50']:.2f} ms | "
                f"{row['policy']['rps']:.0f}/s | {row['added_ms']:+.3f} ms | {verdict} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table (and write the JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.policy_cost")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", default=REDIS_URL, help='"" skips Redis')
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run(args.duration, args.rounds, args.database_url, args.redis_url or None)
    if args.json:
        args.json.write_text(json.dumps(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
