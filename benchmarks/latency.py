"""Gateway overhead, side by side in one run: direct upstream, our facade and
`/api/v1/llm/*`, the LiteLLM proxy; plus the `openai` SDK alone, the upstream client alone
(the SDK's raw path against ours), and memory.

Every target answers the same request from the same upstream process, driven by the same
load generator process at the same concurrency levels, one target after another.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import psutil

from benchmarks.litellm_proxy import LiteLLMProxy
from benchmarks.processes import ROOT, Gateway, Upstream

MODEL = "bench-model"
MESSAGES = [{"role": "user", "content": "Say something."}]
CHAT_BODY = {"model": MODEL, "messages": MESSAGES}
PROMPT_BODY = {"prompt": "Say something."}
STREAM_CHUNKS = 20
CHUNK_INTERVAL_MS = 20.0
HELD_STREAMS = 1000


@dataclass(frozen=True)
class Target:
    """One way of reaching the upstream."""

    name: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    stream_url: str
    stream_body: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How long and how hard: `make bench` uses the defaults, the smoke test a tiny plan."""

    levels: tuple[int, ...] = (1, 50, 200)
    duration: float = 3.0
    warmup: float = 0.5
    held_streams: int = HELD_STREAMS
    with_litellm: bool = True
    # The knee: the facade and direct at rising concurrency, briefly, to find where
    # throughput stops growing and requests start to queue.
    knee_levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 50)
    knee_duration: float = 1.0
    request_timeout: float = 30.0  # seconds; a request without an answer by then failed
    # One client completes only 2.5 streams a second: its stream runs last this many times
    # `duration`, for enough samples.
    one_client_stream_factor: float = 3.0
    sdk_levels: tuple[int, ...] = (1, 50)  # the SDK alone, at these levels
    warm_streams: int = 3  # streams per target before measuring (requests: 20)
    hold_seconds: float = 3.0  # how long the held streams stay open


def run_load(
    target_url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    concurrency: int,
    plan: Plan,
    stream: bool = False,
) -> dict[str, Any]:
    """One load-generator process against one URL; its raw record."""
    command = [sys.executable, "-m", "benchmarks.loadgen", "--url", target_url]
    command += ["--body", json.dumps(body), "--concurrency", str(concurrency)]
    command += ["--duration", str(plan.duration), "--warmup", str(plan.warmup)]
    command += ["--timeout", str(plan.request_timeout)]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    if stream:
        command.append("--stream")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, check=True, timeout=300)
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def summarize(record: dict[str, Any], stream: bool) -> dict[str, Any]:
    """Percentiles, throughput and failures of one run (raw samples kept for the plot).

    `requests` counts completed requests only; `failed` every request of the window that
    did not complete: errors (timeouts among them) and requests unfinished all along.
    """
    latencies: list[float] = record["latencies_ms"]
    summary: dict[str, Any] = {
        "requests": len(latencies),
        "errors": record["errors"],
        "timeouts": record.get("timeouts", 0),
        "unfinished": record.get("unfinished", 0),
        "failed": record["errors"] + record.get("unfinished", 0),
        "error_samples": record["error_samples"],
        "rps": len(latencies) / record["elapsed_s"] if record["elapsed_s"] else 0.0,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "samples": latencies,
    }
    if stream:
        gaps: list[float] = record["gaps_ms"]
        tokens: list[int] = record["tokens"]
        summary.update(
            ttft_p50=percentile(record["ttft_ms"], 50),
            ttft_p95=percentile(record["ttft_ms"], 95),
            ttft_p99=percentile(record["ttft_ms"], 99),
            gap_p50=percentile(gaps, 50),
            gap_p99=percentile(gaps, 99),
            jitter=statistics.pstdev(gaps) if len(gaps) > 1 else float("nan"),
            tokens_min=min(tokens) if tokens else 0,
            ttft_samples=record["ttft_ms"],
        )
    return summary


def sdk_floor(
    base_url: str, transport: str, call: str, concurrency: int, plan: Plan
) -> dict[str, Any]:
    """The `openai` SDK alone driving the upstream (`benchmarks.sdk_floor`, own process)."""
    command = [sys.executable, "-m", "benchmarks.sdk_floor", "--base-url", base_url]
    command += ["--transport", transport, "--call", call, "--concurrency", str(concurrency)]
    command += ["--duration", str(plan.duration)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, check=True, timeout=300)
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def client_floor(text_url: str, stream_url: str, plan: Plan) -> dict[str, Any]:
    """The SDK's raw path and our own client side by side, no gateway
    (`benchmarks.client_floor`, own process): µs per call, plain and streamed."""
    levels = ",".join(str(level) for level in plan.levels[:2])
    command = [sys.executable, "-m", "benchmarks.client_floor", "--base-url", text_url]
    command += ["--stream-url", stream_url, "--levels", levels]
    command += ["--duration", str(plan.duration / 2)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, check=True, timeout=600)
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        total += child.memory_info().rss
    return total / 2**20


def warm(target: Target, requests: int = 20, streams: int = 3) -> None:
    """A few requests of each kind so lazy imports and pools are not measured."""
    with httpx.Client(headers=target.headers, timeout=60) as client:
        for _ in range(requests):
            client.post(target.url, json=target.body).raise_for_status()
        for _ in range(streams):
            with client.stream("POST", target.stream_url, json=target.stream_body) as reply:
                reply.raise_for_status()
                for _ in reply.iter_bytes():
                    pass


def targets(upstream: Upstream, ours: Gateway, litellm: LiteLLMProxy | None) -> list[Target]:
    """Every target of the run, in the order they are measured at each level."""
    stream_chat = {**CHAT_BODY, "stream": True}
    found = [
        Target(
            "direct",
            f"{upstream.base_url}/chat/completions",
            {},
            CHAT_BODY,
            f"{upstream.base_url}/chat/completions",
            stream_chat,
        ),
        Target(
            "facade",
            f"{ours.url}/v1/chat/completions",
            ours.headers,
            CHAT_BODY,
            f"{ours.url}/v1/chat/completions",
            stream_chat,
        ),
        Target(
            "llm-api",
            f"{ours.url}/api/v1/llm/generate",
            ours.headers,
            PROMPT_BODY,
            f"{ours.url}/api/v1/llm/stream",
            PROMPT_BODY,
        ),
    ]
    if litellm is not None:
        found.append(
            Target(
                "litellm",
                f"{litellm.base_url}/chat/completions",
                litellm.headers,
                CHAT_BODY,
                f"{litellm.base_url}/chat/completions",
                stream_chat,
            )
        )
    return found


@contextmanager
def _gateways(plan: Plan, upstream_url: str) -> Iterator[tuple[Gateway, Any]]:
    with ExitStack() as stack:
        ours = stack.enter_context(Gateway(upstream_url, MODEL))
        litellm = (
            stack.enter_context(LiteLLMProxy(upstream_url, MODEL)) if plan.with_litellm else None
        )
        yield ours, litellm


def run(plan: Plan = Plan(), log: Any = print) -> dict[str, Any]:
    """The whole latency/throughput/stream/memory run; a JSON-able result."""
    result: dict[str, Any] = {
        "plan": plan.__dict__,
        "non_stream": {},
        "stream": {},
        "sdk_floor": [],
        "client_floor": {},
        "memory": {},
    }
    with (
        Upstream(STREAM_CHUNKS, CHUNK_INTERVAL_MS) as upstream,
        _gateways(plan, upstream.base_url) as (ours, litellm),
    ):
        all_targets = targets(upstream, ours, litellm)
        for target in all_targets:
            warm(target, streams=plan.warm_streams)
        result["memory"]["idle_mib"] = {"ours": rss_mib(ours.pid)}
        if litellm is not None:
            result["memory"]["idle_mib"]["litellm"] = rss_mib(litellm.pid)
        for level in plan.levels:
            row = result["non_stream"][str(level)] = {}
            for target in all_targets:
                row[target.name] = summarize(
                    run_load(target.url, target.headers, target.body, level, plan), stream=False
                )
                log(_line("non-stream", level, target.name, row[target.name]))
        result["knee"] = knee_sweep(plan, all_targets[0], all_targets[1], log)
        for level in plan.sdk_levels:
            for transport, call in (
                ("aiohttp", "create"),
                ("httpx", "create"),
                ("aiohttp", "post"),
            ):
                floor = sdk_floor(upstream.base_url, transport, call, level, plan)
                result["sdk_floor"].append(floor)
                log(f"sdk alone  c={level:<4} {transport:<8}{call:<6} {floor['rps']:8.0f} calls/s")
        # Streams at no pace, so that a stream's cost is the client's CPU, not the waiting.
        with Upstream(STREAM_CHUNKS, 0.0) as unpaced:
            result["client_floor"] = client_floor(upstream.base_url, unpaced.base_url, plan)
        for cell, figures in result["client_floor"].items():
            log(f"client     {cell:<20} {figures['wall_us']:8.0f} µs/call")
        for level in plan.levels:
            row = result["stream"][str(level)] = {}
            stream_plan = (
                replace(plan, duration=plan.duration * plan.one_client_stream_factor)
                if level == 1
                else plan
            )
            for target in all_targets:
                row[target.name] = summarize(
                    run_load(
                        target.stream_url,
                        target.headers,
                        target.stream_body,
                        level,
                        stream_plan,
                        stream=True,
                    ),
                    stream=True,
                )
                log(_line("stream", level, target.name, row[target.name]))
        result["memory"]["after_load_mib"] = {"ours": rss_mib(ours.pid)}
        if litellm is not None:
            result["memory"]["after_load_mib"]["litellm"] = rss_mib(litellm.pid)
    result["memory"]["held_streams"] = held_streams(plan, log)
    return result


def knee_sweep(plan: Plan, direct: Target, facade: Target, log: Any) -> dict[str, Any]:
    """Direct and the facade at each of `plan.knee_levels` clients, briefly; and the knee."""
    short = replace(plan, duration=plan.knee_duration, warmup=min(plan.warmup, 0.3))
    levels: dict[str, dict[str, Any]] = {}
    for level in plan.knee_levels:
        row = levels[str(level)] = {}
        for target in (direct, facade):
            record = run_load(target.url, target.headers, target.body, level, short)
            summary = summarize(record, stream=False)
            summary.pop("samples")
            row[target.name] = summary
            log(_line("knee", level, target.name, summary))
    return {"levels": levels, **find_knee(levels)}


KNEE_SHARE = 0.9  # the knee: the fewest clients reaching this share of the best throughput


def find_knee(levels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where the facade's throughput stops growing, and its added p99 below that.

    The knee is the fewest clients at which the facade reaches `KNEE_SHARE` of the best
    throughput of the sweep: more clients than that only queue. *Below saturation* is the
    level before the knee (the knee itself when it is the first level: one client never
    queues). Added p99 is the facade's p99 minus direct's at the same concurrency.
    """
    usable = {
        int(level): row
        for level, row in levels.items()
        if row["facade"]["requests"] and row["direct"]["requests"]
    }
    if not usable:
        return {"knee": None, "below": None, "knee_rps": 0.0, "added_p99_below": None}
    best = max(row["facade"]["rps"] for row in usable.values())
    ordered = sorted(usable)
    knee = next(level for level in ordered if usable[level]["facade"]["rps"] >= KNEE_SHARE * best)
    below = max((level for level in ordered if level < knee), default=knee)
    row = usable[below]
    return {
        "knee": knee,
        "below": below,
        "knee_rps": usable[knee]["facade"]["rps"],
        "best_rps": best,
        "added_p99_below": row["facade"]["p99"] - row["direct"]["p99"],
    }


def held_streams(plan: Plan, log: Any) -> dict[str, Any]:
    """RSS while `plan.held_streams` streams are open at once through each gateway.

    A slow upstream (one chunk every 500 ms) keeps every stream open for the whole hold.
    """
    found: dict[str, Any] = {"streams": plan.held_streams}
    with Upstream(stream_chunks=120, chunk_interval_ms=500) as slow:
        gateways: list[tuple[str, Any]] = [("ours", Gateway(slow.base_url, MODEL))]
        if plan.with_litellm:
            gateways.append(("litellm", LiteLLMProxy(slow.base_url, MODEL)))
        for name, gateway in gateways:
            with gateway:
                url = (
                    f"{gateway.url}/v1/chat/completions"
                    if isinstance(gateway, Gateway)
                    else f"{gateway.base_url}/chat/completions"
                )
                found[name] = _hold(
                    url, gateway.headers, gateway.pid, plan.held_streams, plan.hold_seconds
                )
                log(f"held streams  {name:<12} {found[name]}")
    return found


def _hold(
    url: str, headers: dict[str, str], pid: int, streams: int, seconds: float
) -> dict[str, Any]:
    idle = rss_mib(pid)
    command = [sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--hold", str(streams)]
    command += ["--hold-seconds", str(seconds)]
    command += ["--body", json.dumps({**CHAT_BODY, "stream": True})]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    peak = idle
    ready_line = process.stdout.readline()
    started = time.monotonic()
    while time.monotonic() - started < seconds - 0.5:  # sample while every stream is open
        peak = max(peak, rss_mib(pid))
        time.sleep(0.1)
    process.wait(timeout=120)
    ready = json.loads(ready_line) if ready_line else {"ready": 0, "errors": streams}
    return {
        "idle_mib": idle,
        "held_mib": peak,
        "open": ready["ready"],
        "errors": ready["errors"],
        "error_samples": ready.get("error_samples", []),
        "open_s": ready.get("open_s"),
    }


def _line(kind: str, level: int, name: str, summary: dict[str, Any]) -> str:
    text = (
        f"{kind:<10} c={level:<4} {name:<13} {summary['rps']:8.0f} req/s  p50 {summary['p50']:8.2f}"
        f"  p99 {summary['p99']:8.2f} ms  failed {summary['failed']}"
        f" ({summary['timeouts']} timeouts, {summary['unfinished']} unfinished)"
    )
    if "ttft_p50" in summary:
        text += f"  ttft p50 {summary['ttft_p50']:.2f} ms  jitter {summary['jitter']:.2f} ms"
    return text
