"""What a policy costs per request: the facade called with a key that has a policy
(requests per minute, tokens per minute, an allow-list) against one without, side by side.

python -m benchmarks.policy_cost [--duration 3] [--rounds 2] [--database-url URL]
                                 [--redis-url redis://127.0.0.1:6379/0]

Alternating A/B runs at 1 and 50 clients on one gateway (SQLite by default, as `make bench`
runs it; counters in the database unless --redis-url);
prints requests/s, p50 and the added milliseconds per request (1 client: p50 difference;
50 clients: the difference in CPU time per request, 1/rps).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import httpx

from benchmarks.latency import CHAT_BODY, MODEL, Plan, run_load, summarize
from benchmarks.processes import ADMIN_EMAIL, ADMIN_PASSWORD, Gateway, Upstream

POLICY = {
    "allowed_models": [f"lmstudio/{MODEL}", "lmstudio/other-model", "openai/*"],
    "requests_per_minute": 1_000_000_000,
    "tokens_per_minute": 1_000_000_000,
}


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


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.policy_cost")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", help="count in Redis (REDIS_URL) instead")
    args = parser.parse_args(argv)
    plan = Plan(duration=args.duration, warmup=0.5)
    env = {"DATABASE_URL": args.database_url} if args.database_url else {}
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    with Upstream(20, 0.0) as upstream, Gateway(upstream.base_url, MODEL, **env) as gateway:
        sides = {"without": gateway.headers, "with policy": key_with_policy(gateway, POLICY)}
        url = f"{gateway.url}/v1/chat/completions"
        for headers in sides.values():  # warm both
            with httpx.Client(headers=headers, timeout=30) as client:
                for _ in range(20):
                    client.post(url, json=CHAT_BODY).raise_for_status()
        for level in (1, 50):
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
            for _ in range(args.rounds):
                for name, headers in sides.items():
                    record = run_load(url, headers, CHAT_BODY, level, plan)
                    runs[name].append(summarize(record, stream=False))
            best = {n: max(r, key=lambda s: s["rps"]) for n, r in runs.items()}
            for name, summary in best.items():
                print(
                    f"c={level:<3} {name:<12} {summary['rps']:8.0f} req/s  "
                    f"p50 {summary['p50']:6.2f} ms  failed {summary['failed']}"
                )
            a, b = best["without"], best["with policy"]
            added = b["p50"] - a["p50"] if level == 1 else 1000 / b["rps"] - 1000 / a["rps"]
            print(f"c={level:<3} added by the policy: {added:+.3f} ms per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
