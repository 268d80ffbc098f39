"""The floors under the gateway's figures: what the same server costs doing (almost) nothing.

Two bare ASGI apps, served by uvicorn exactly as `python -m app serve` serves ours (uvloop,
httptools, one worker, access log off), answer the facade's route:

- `constant`: a prebuilt chat completion, no upstream call: the server's own cost.
- `relay`: the body sent on to the upstream with one pooled aiohttp session and the reply
  (or the SSE stream, chunk by chunk) passed back unparsed: the least any Python gateway on
  this server and client can add. No auth, no validation, no retries, no metrics.

What ours adds beyond `relay` is what auth, validation, settings, retries, metrics and
logging cost; what `relay` adds beyond `constant` is the upstream hop itself.

    python -m benchmarks.floor serve --mode relay --upstream http://127.0.0.1:18234/v1 --port 9001
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from benchmarks.processes import ROOT, free_port, stop, wait_until
from benchmarks.upstream import CREATED, MODEL, TEXT

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CONSTANT = orjson.dumps(
    {
        "id": "chatcmpl-floor",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
    }
)
JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def constant_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Answers every POST with the same completion; GET /health with `ok`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await _body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": CONSTANT})

    return app


def relay_app(upstream: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Sends each POST body to `upstream` + the path's tail and relays the reply as is."""
    sessions: list[aiohttp.ClientSession] = []

    def session() -> aiohttp.ClientSession:
        if not sessions:
            connector = aiohttp.TCPConnector(limit=2000, ttl_dns_cache=None)
            sessions.append(aiohttp.ClientSession(connector=connector))
        return sessions[0]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _body(receive)
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": JSON})
            await send({"type": "http.response.body", "body": b'"ok"'})
            return
        stream = b'"stream":true' in body.replace(b" ", b"")
        url = upstream + "/chat/completions"
        headers = {"content-type": "application/json"}
        async with session().post(url, data=body, headers=headers) as reply:
            start = {"type": "http.response.start", "status": reply.status}
            if not stream:
                payload = await reply.read()
                await send({**start, "headers": JSON})
                await send({"type": "http.response.body", "body": payload})
                return
            await send({**start, "headers": SSE})
            async for chunk in reply.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


class FloorServer:
    """One bare app under uvicorn in its own process; `url` is its facade-like route."""

    def __init__(self, mode: str, upstream: str) -> None:
        self.mode = mode
        self.upstream = upstream
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v1/chat/completions"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        command = [sys.executable, "-m", "benchmarks.floor", "serve", "--mode", self.mode]
        command += ["--upstream", self.upstream, "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        wait_until(f"the {self.mode} floor", self.base, self.process, time.monotonic() + 30)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            stop(self.process)


BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


def measure(levels: Sequence[int] = (1, 50), duration: float = 3.0, warmup: float = 0.5) -> str:
    """Direct, `constant` and `relay` side by side, one after another per level; markdown."""
    from benchmarks.latency import Plan, run_load, summarize
    from benchmarks.processes import Upstream

    plan = Plan(levels=tuple(levels), duration=duration, warmup=warmup)
    rows = [
        "| clients | target | p50 ms | p99 ms | added p50 ms | req/s | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    with (
        Upstream() as upstream,
        FloorServer("constant", upstream.base_url) as constant,
        FloorServer("relay", upstream.base_url) as relay,
    ):
        direct = f"{upstream.base_url}/chat/completions"
        targets = [
            ("direct to upstream", direct),
            ("uvicorn + constant reply (no upstream)", constant.url),
            ("uvicorn + bare aiohttp relay", relay.url),
        ]
        for level in plan.levels:
            floor_p50 = float("nan")
            for name, url in targets:
                found = summarize(run_load(url, {}, BODY, level, plan), stream=False)
                if url == direct:
                    floor_p50 = found["p50"]
                added = "" if url == direct else f"{found['p50'] - floor_p50:.2f}"
                rows.append(
                    f"| {level} | {name} | {found['p50']:.2f} | {found['p99']:.2f} | "
                    f"{added} | {found['rps']:.0f} | {found['errors']} |"
                )
        stream_body = {**BODY, "stream": True}
        ttft = {
            name: summarize(run_load(url, {}, stream_body, 1, plan, stream=True), True)
            for name, url in (targets[0], targets[2])
        }
    direct_ttft = ttft[targets[0][0]]["ttft_p50"]
    relay_ttft = ttft[targets[2][0]]["ttft_p50"]
    rows.append("")
    rows.append(
        f"Streams, 1 client: time to first token p50 direct {direct_ttft:.2f} ms, through the "
        f"bare relay {relay_ttft:.2f} ms (**+{relay_ttft - direct_ttft:.2f} ms**)."
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """`serve`: run one floor app until SIGTERM; `measure`: print the floors' table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("command", choices=["serve", "measure"])
    parser.add_argument("--mode", choices=["constant", "relay"], default="constant")
    parser.add_argument("--upstream", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.command == "measure":
        print(measure(duration=args.duration))
        return 0
    import uvicorn

    app = constant_app() if args.mode == "constant" else relay_app(args.upstream.rstrip("/"))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
