"""A fast OpenAI-compatible upstream for benchmarks: instant replies, or SSE at a fixed pace.

It is the floor every gateway is measured against, so it does as little as a server can:
httptools parses, uvloop schedules, every reply body is prebuilt. Streams send `max_tokens`
chunks (default `--stream-chunks`) one `--chunk-interval-ms` apart, then a finish chunk
with usage and `data: [DONE]`, all with chunked transfer encoding as LM Studio does.

    python -m benchmarks.upstream --port 18234 --stream-chunks 20 --chunk-interval-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from typing import cast

import httptools
import orjson
import uvloop

MODEL = "bench-model"
TEXT = "The quick brown fox jumps over the lazy dog."
CREATED = 1_760_000_000


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


COMPLETION = _response(
    "200 OK",
    orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
        }
    ),
)
MODELS = _response(
    "200 OK",
    orjson.dumps(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
    ),
)
NOT_FOUND = _response("404 Not Found", b'{"error":"not found"}')
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _sse_chunk(payload: dict[str, object] | str) -> bytes:
    data = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    event = f"data: {data}\n\n".encode()
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


_FRAME = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED}
TOKEN = _sse_chunk(
    {**_FRAME, "model": MODEL, "choices": [{"index": 0, "delta": {"content": "tok "}}]}
)
FINISH = _sse_chunk(
    {
        **_FRAME,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
)
DONE = _sse_chunk("[DONE]") + b"0\r\n\r\n"


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order."""

    def __init__(self, stream_chunks: int, interval: float) -> None:
        self.stream_chunks = stream_chunks
        self.interval = interval
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.streams: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.streams:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        path = self.url.split(b"?", 1)[0]
        body, self.url, self.body = b"".join(self.body), b"", []
        if path == b"/v1/chat/completions":
            request = orjson.loads(body) if body else {}
            if request.get("stream"):
                chunks = request.get("max_tokens") or self.stream_chunks
                task = asyncio.get_running_loop().create_task(self._stream(int(chunks)))
                self.streams.add(task)
                task.add_done_callback(self.streams.discard)
            else:
                self.transport.write(COMPLETION)
        elif path == b"/v1/models":
            self.transport.write(MODELS)
        else:
            self.transport.write(NOT_FOUND)

    async def _stream(self, chunks: int) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(STREAM_HEAD)
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        for _ in range(chunks):
            if self.interval:
                deadline += self.interval  # a fixed pace, not interval + processing time
                await asyncio.sleep(max(0.0, deadline - loop.time()))
            if transport.is_closing():
                return
            transport.write(TOKEN)
        transport.write(FINISH + DONE)


async def serve(host: str, port: int, stream_chunks: int, interval: float) -> None:
    """Serve until SIGINT/SIGTERM; prints `listening on http://host:port/v1` once bound."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(stream_chunks, interval), host, port, backlog=4096
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://{host}:{bound}/v1", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stream-chunks", type=int, default=20)
    parser.add_argument("--chunk-interval-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.stream_chunks, args.chunk_interval_ms / 1000))


if __name__ == "__main__":
    main()
