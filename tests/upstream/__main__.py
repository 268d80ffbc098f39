"""Run the stand-in upstream in the foreground.

python -m tests.upstream --port 1234 --models a,b --stream-chunks 64 --chunk-interval-ms 5
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

from .server import DEFAULT_MODELS, StandInServer


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=1234, help="port (0 picks a free one)")
    parser.add_argument("--models", type=_csv, default=list(DEFAULT_MODELS))
    parser.add_argument("--loaded", type=_csv, default=None, help="default: all models")
    parser.add_argument("--error-style", choices=["lmstudio", "openai"], default="lmstudio")
    parser.add_argument("--lmstudio-version", choices=["0.3", "0.4"], default="0.3")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--jit", action="store_true", help="LM Studio just-in-time loading")
    parser.add_argument("--json-object-supported", action="store_true")
    parser.add_argument("--no-native-api", action="store_true", help="404 on /api/v0/*")
    parser.add_argument("--stream-chunks", type=int, default=None, help="tokens per reply")
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0)
    parser.add_argument("--max-records", type=int, default=1000)
    args = parser.parse_args(argv)

    server = StandInServer(
        models=args.models,
        loaded=args.loaded,
        error_style=args.error_style,
        lmstudio_version=args.lmstudio_version,
        api_key=args.api_key,
        jit=args.jit,
        json_object_supported=args.json_object_supported,
        native_api=not args.no_native_api,
        host=args.host,
        port=args.port,
        stream_chunks=args.stream_chunks,
        chunk_interval=args.chunk_interval_ms / 1000.0,
        max_records=args.max_records,
    )
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with server:
        print(f"stand-in upstream listening on {server.base_url}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
