"""The upstream client alone, side by side: the `openai` SDK's raw path against our own
(`OpenAIWire`, aiohttp directly), alternately in one process on one event loop (uvloop).

`sdk` is `client.post("/chat/completions", cast_to=object)` (and `stream=True` with
`AsyncStream[object]`) on the SDK's aiohttp transport, the leanest way through the SDK and
the one the service used before; `ours` is the service's wire (`complete` / `stream`,
reading the reply into a Completion or chunks). No gateway, no retries: the client only.

Each round runs every (kind, concurrency) cell for `--duration` seconds per client, closed
loop, against `benchmarks.upstream`; the clients alternate within each cell, and the order
flips each round, so that the noise of a shared machine falls on both alike. Start the
upstream with `--chunk-interval-ms 0`, so that a stream costs only CPU. Prints one JSON
object per cell: wall µs per call (1e6 * seconds / calls), the client process's CPU µs per
call, and calls per second, each the median over rounds.

    python -m benchmarks.upstream --port 18234 --chunk-interval-ms 0 &
    python -m benchmarks.client_floor --base-url http://127.0.0.1:18234/v1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx2
import openai
import uvloop
from pydantic import SecretStr

from benchmarks.latency import CHAT_BODY, MESSAGES, MODEL

BODY: dict[str, object] = dict(CHAT_BODY)
BEARER: openai.RequestOptions = {"security": {"bearer_auth": True}}
Call = Callable[[], Awaitable[int]]


def sdk_calls(base_url: str, connections: int) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    """A plain and a streamed call through the SDK's raw path, on its aiohttp transport."""
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key="unused",
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(limits=limits),
    )
    stream_body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}

    async def text() -> int:
        reply = await client.post("/chat/completions", body=BODY, cast_to=object, options=BEARER)
        return len(reply["choices"][0]["message"]["content"])  # type: ignore[index]

    async def stream() -> int:
        events = await client.post(
            "/chat/completions",
            body=stream_body,
            cast_to=object,
            options=BEARER,
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )
        count = 0
        async for _event in events:
            count += 1
        return count

    return text, stream, client.close


def our_calls(base_url: str) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    """The same calls through the service's own wire (the openai provider's)."""
    from app.services.llm.config import OpenAIConfig
    from app.services.llm.protocol import ChatRequest
    from app.services.llm.providers.clients import close_clients
    from app.services.llm.providers.openai import SPEC

    config = OpenAIConfig(
        api_key=SecretStr("unused"), base_url=base_url, default_model=MODEL, max_retries=0
    )
    wire = SPEC.make_wire(SPEC, config)
    request = ChatRequest(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]

    async def text() -> int:
        return len((await wire.complete(request)).text)

    async def stream() -> int:
        count = 0
        async for _chunk in wire.stream(request):
            count += 1
        return count

    return text, stream, close_clients


async def cell(call: Call, concurrency: int, duration: float) -> dict[str, float]:
    """Closed-loop calls for `duration` s after a short warm-up: wall and CPU µs per call."""
    loop = asyncio.get_running_loop()
    calls = 0
    measuring = False
    warmup = min(0.3, duration)
    stop_at = loop.time() + warmup + duration

    async def worker() -> None:
        nonlocal calls
        while loop.time() < stop_at:
            await call()
            if measuring:
                calls += 1

    async def start_measuring() -> tuple[float, float]:
        nonlocal measuring
        await asyncio.sleep(warmup)
        measuring = True
        return time.perf_counter(), time.process_time()

    timer = asyncio.ensure_future(start_measuring())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall0, cpu0 = await timer
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if not calls:  # nothing completed: say so rather than divide by zero
        return {"wall_us": math.nan, "cpu_us": math.nan, "calls_s": 0.0}
    return {"wall_us": 1e6 * wall / calls, "cpu_us": 1e6 * cpu / calls, "calls_s": calls / wall}


async def drive(
    text_url: str, stream_url: str, levels: Sequence[int], duration: float, rounds: int
) -> dict[str, Any]:
    """Every cell, `rounds` times, the two clients alternately; medians per cell."""
    connections = max(levels) + 8
    # Our pool's size follows the admission cap, as in the service.
    os.environ["LLM_MAX_CONCURRENCY"] = str(max(levels))
    clients = {
        "sdk": (sdk_calls(text_url, connections), sdk_calls(stream_url, connections)),
        "ours": (our_calls(text_url), our_calls(stream_url)),
    }
    samples: dict[str, list[dict[str, float]]] = {}
    for round_ in range(rounds):
        order = list(clients) if round_ % 2 == 0 else list(reversed(clients))
        for level in levels:
            for kind in ("text", "stream"):
                for name in order:
                    plain, streamed = clients[name]
                    call = plain[0] if kind == "text" else streamed[1]
                    found = await cell(call, level, duration)
                    samples.setdefault(f"{name} {kind} c={level}", []).append(found)
    for plain, streamed in clients.values():
        await plain[2]()
        if streamed[2] is not plain[2]:
            await streamed[2]()
    return {
        key: {
            figure: round(statistics.median(s[figure] for s in runs), 1)
            for figure in ("wall_us", "cpu_us", "calls_s")
        }
        for key, runs in samples.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, drive, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_floor", description=__doc__)
    parser.add_argument("--base-url", required=True, help="the upstream for plain replies")
    parser.add_argument("--stream-url", help="an upstream streaming at no pace (default: same)")
    parser.add_argument("--levels", default="1,50")
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.levels.split(",")]
    result = uvloop.run(
        drive(args.base_url, args.stream_url or args.base_url, levels, args.duration, args.rounds)
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
