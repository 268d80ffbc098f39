"""Closed-loop HTTP load generator (aiohttp + uvloop), run in a process of its own.

`--concurrency` workers each send one request after another for `--duration` seconds (after
`--warmup` seconds whose results are dropped) and the per-request figures are printed as one
JSON object. With `--stream` each reply is read as SSE: the time to the first token and the
arrival time of every token are recorded. `--hold N` opens N streams at once, prints a
`{"ready": ...}` line when every one has delivered its first token, keeps them open for
`--hold-seconds`, then closes them (used to measure memory with many open streams).

A chunk counts as a token when its line contains the upstream's token text (`tok `), so the
same rule works for every gateway's event format. A stream is complete when it ends with
`data: [DONE]` (OpenAI's format) or `event: done` (`/api/v1/llm/stream`); one that ends
without, or carries an error event, is a failure.

Nothing is left out silently: every request started in the measured window ends as a
latency, an error or a timeout (`--timeout` seconds per request), and a request that was
already in flight when the window opened and still was when it closed counts as
`unfinished`: a target that completes nothing shows its failures, never an empty row.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop

TOKEN_MARK = b"tok "
END_MARKS = (b"data: [DONE]", b"event: done")
ERROR_MARKS = (b"event: error", b'data: {"error"')


@dataclass
class Record:
    """What one run observed; serialised as the process's output."""

    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    errors: int = 0  # every failure: HTTP errors, broken streams, timeouts
    timeouts: int = 0  # of which: no complete answer within --timeout
    unfinished: int = 0  # in flight for the whole window (started before it, ended after)
    error_samples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def error(self, message: str, timeout: bool = False) -> None:
        self.errors += 1
        self.timeouts += timeout
        if len(self.error_samples) < 5:
            self.error_samples.append(message[:300])


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, stream: bool, record: Record | None
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body) as response:
            if response.status != 200:
                text = await response.text()
                if record is not None:
                    record.error(f"HTTP {response.status}: {text}")
                return
            if not stream:
                await response.read()
                if record is not None:
                    record.latencies_ms.append((time.perf_counter() - started) * 1000)
                return
            arrivals: list[float] = []
            ended = failed = False
            async for line in response.content:
                if line.startswith(ERROR_MARKS):
                    failed = True
                elif line.startswith(END_MARKS):
                    ended = True
                elif TOKEN_MARK in line and line.startswith(b"data"):
                    arrivals.append(time.perf_counter())
            if record is None:
                return
            if failed or not ended or not arrivals:
                what = "an error event" if failed else "no end" if arrivals else "no token"
                record.error(f"stream with {len(arrivals)} tokens and {what}")
                return
            record.latencies_ms.append((time.perf_counter() - started) * 1000)
            record.ttft_ms.append((arrivals[0] - started) * 1000)
            record.gaps_ms.extend((b - a) * 1000 for a, b in itertools.pairwise(arrivals))
            record.tokens.append(len(arrivals))
    except TimeoutError:
        if record is not None:
            record.error("TimeoutError: no complete answer in time", timeout=True)
    except (aiohttp.ClientError, OSError) as exc:
        if record is not None:
            record.error(f"{type(exc).__name__}: {exc}")


async def closed_loop(
    url: str,
    headers: dict[str, str],
    body: bytes,
    concurrency: int,
    duration: float,
    warmup: float,
    stream: bool,
    request_timeout: float = 30.0,
) -> Record:
    """Run `concurrency` sequential senders; return what was recorded after the warm-up."""
    record = Record()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout, skip_auto_headers=["User-Agent"]
    ) as session:
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + warmup
        stop_at = measure_from + duration
        measured_start: list[float] = []

        async def worker() -> None:
            while (now := loop.time()) < stop_at:
                measuring = now >= measure_from
                if measuring and not measured_start:
                    measured_start.append(time.perf_counter())
                await _one(session, url, body, stream, record if measuring else None)
                if not measuring and loop.time() >= stop_at:
                    record.unfinished += 1  # a warm-up request that outlasted the window

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        record.elapsed_s = time.perf_counter() - measured_start[0] if measured_start else duration
    return record


async def hold(
    url: str, headers: dict[str, str], body: bytes, streams: int, seconds: float
) -> dict[str, Any]:
    """Open `streams` streams at once; report when all delivered a token; hold; close."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    first_token = 0
    errors: list[str] = []
    all_open = asyncio.Event()
    release = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal first_token
        try:
            async with session.post(url, data=body) as response:
                if response.status != 200:
                    errors.append(f"HTTP {response.status}: {(await response.text())[:200]}")
                    return
                async for line in response.content:
                    if TOKEN_MARK in line:
                        first_token += 1
                        if first_token + len(errors) >= streams:
                            all_open.set()
                        await release.wait()
                        return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if first_token + len(errors) >= streams:
                all_open.set()

    started = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(streams)]
        try:
            await asyncio.wait_for(all_open.wait(), timeout=120)
        except TimeoutError:
            errors.append("timed out waiting for every stream's first token")
        ready = {
            "ready": first_token,
            "errors": len(errors),
            "error_samples": errors[:5],
            "open_s": time.perf_counter() - started,
        }
        print(json.dumps(ready), flush=True)
        await asyncio.sleep(seconds)
        release.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ready


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run, print the JSON result on stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="JSON request body")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--hold", type=int, default=0, help="open this many streams at once")
    parser.add_argument("--hold-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    headers = dict(h.split(": ", 1) for h in args.header)
    headers.setdefault("Content-Type", "application/json")
    body = args.body.encode()
    if args.hold:
        uvloop.run(hold(args.url, headers, body, args.hold, args.hold_seconds))
        return
    record = uvloop.run(
        closed_loop(
            args.url,
            headers,
            body,
            args.concurrency,
            args.duration,
            args.warmup,
            args.stream,
            args.timeout,
        )
    )
    json.dump(record.__dict__, sys.stdout)


if __name__ == "__main__":
    main()
