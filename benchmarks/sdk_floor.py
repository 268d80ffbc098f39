"""The `openai` SDK alone against the upstream: the ceiling for any gateway built on it.

Runs in its own process: `--concurrency` tasks call the SDK one after another for
`--duration` seconds on one event loop (uvloop), with the SDK on its aiohttp or its default
httpx transport, and print latency percentiles and calls per second as JSON. `--call
create` is the usual `chat.completions.create` (typed params and response models); `--call
post` is `client.post(..., cast_to=object)`, the documented raw path our service used
before its own client (`benchmarks/client_floor.py` measures the two side by side).

    python -m benchmarks.sdk_floor --base-url http://127.0.0.1:18234/v1 --transport aiohttp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import httpx2
import openai
import uvloop

from benchmarks.latency import CHAT_BODY, MESSAGES, MODEL, percentile

BODY: dict[str, object] = dict(CHAT_BODY)
BEARER: openai.RequestOptions = {"security": {"bearer_auth": True}}


async def drive(
    base_url: str, transport: str, call: str, concurrency: int, duration: float
) -> dict[str, Any]:
    """Closed-loop calls through one SDK client; latency samples after a 0.5 s warm-up."""
    limits = httpx2.Limits(
        max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8
    )
    http_client = (
        openai.DefaultAioHttpClient(limits=limits)
        if transport == "aiohttp"
        else openai.DefaultAsyncHttpxClient(limits=limits)
    )
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="unused", max_retries=0, http_client=http_client
    )
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + 0.5
    stop_at = measure_from + duration

    async def worker() -> None:
        while (now := loop.time()) < stop_at:
            started = time.perf_counter()
            if call == "create":
                await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
            else:
                await client.post("/chat/completions", body=BODY, cast_to=object, options=BEARER)
            if now >= measure_from:
                latencies.append((time.perf_counter() - started) * 1000)

    async with client:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "transport": transport,
        "call": call,
        "concurrency": concurrency,
        "rps": len(latencies) / duration,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "us_per_call": 1e6 * duration / len(latencies) if latencies else None,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, drive, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sdk_floor", description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument("--call", choices=["create", "post"], default="create")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    result = uvloop.run(
        drive(args.base_url, args.transport, args.call, args.concurrency, args.duration)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
