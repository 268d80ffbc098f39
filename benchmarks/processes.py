"""Start and stop the processes a benchmark run needs: the upstream and our gateway.

Each runs in a process of its own, as in production, so that the load generator, the
upstream and the gateway never share an interpreter or an event loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "bench@example.com"
ADMIN_PASSWORD = "bench-password-123"  # noqa: S105 - a throwaway database in a temp dir


# `python -m app serve` on {port}, access log off. LOG_EVERYTHING=1 sends every logger (the
# SDK's, aiohttp's, ...) to stderr at DEBUG, not only the app's: the log test reads all of it.
# Migrations run before, in a process of their own, as in production: Alembic loaded into
# the serving process would count in its memory.
_SERVE = (
    "import logging, os\n"
    "if os.environ.get('LOG_EVERYTHING'): logging.basicConfig(level=logging.DEBUG)\n"
    "from app.cli import serve\n"
    "serve(port={port}, access_log=False)"
)


def free_port() -> int:
    """A port nothing listens on right now (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: str, url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll `url` until it answers, failing early if the process died."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{check} exited with code {process.returncode} before it served")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{check} did not answer at {url} in time")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its workers too (own session)
            process.kill()
            process.wait()


class Upstream:
    """`benchmarks.upstream` in its own process."""

    def __init__(self, stream_chunks: int = 20, chunk_interval_ms: float = 20.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.args = ["--stream-chunks", str(stream_chunks)]
        self.args += ["--chunk-interval-ms", str(chunk_interval_ms)]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        command = [sys.executable, "-m", "benchmarks.upstream", "--port", str(self.port)]
        self.process = subprocess.Popen(command + self.args, cwd=ROOT, stdout=subprocess.DEVNULL)
        wait_until("the upstream", f"{self.base_url}/models", self.process, time.monotonic() + 30)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            stop(self.process)


class Gateway:
    """Our service (`python -m app serve`, one worker) on a fresh SQLite file, LM Studio = upstream.

    `headers` carries a personal API key, which is what OpenAI clients send to the facade.
    """

    def __init__(
        self,
        upstream_url: str,
        model: str,
        root: Path = ROOT,
        log_path: Path | None = None,
        serve: Sequence[str] | None = None,
        **env: str,
    ) -> None:
        self.root = root  # another checkout of the service (before/after comparisons)
        self.log_path = log_path  # where the gateway's stderr goes (default: a temp file)
        # The serving command, `{port}` filled in (default: `python -m app serve`, 1 worker).
        self.serve = serve
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream_url = upstream_url
        self.model = model
        self.extra_env = env
        self.headers: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-gateway-")

    @property
    def pid(self) -> int:
        """The serving process (uvicorn with one worker serves in-process)."""
        assert self.process is not None
        return self.process.pid

    def env(self) -> dict[str, str]:
        """The environment the gateway runs with (no secret from the caller's environment)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "LMSTUDIO_"))}
        env.update(
            {
                "DATABASE_URL": f"sqlite+aiosqlite:///{self._tmp.name}/app.db",
                "FIRST_SUPERUSER_EMAIL": ADMIN_EMAIL,
                "FIRST_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
                "LLM_PROVIDER": "lmstudio",
                "LMSTUDIO_BASE_URL": self.upstream_url,
                "LMSTUDIO_MODEL": self.model,
                # A benchmark measures the gateway, not its admission queue: let every
                # concurrent request through (the default cap of 16 would queue them).
                "LLM_MAX_CONCURRENCY": "2000",
                # Stopping a gateway between runs need not wait for load balancers.
                "SHUTDOWN_DRAIN_SECONDS": "0",
                **self.extra_env,
            }
        )
        return env

    def __enter__(self) -> Self:
        env = self.env()
        python = [sys.executable, "-m", "app"]
        subprocess.run(
            [*python, "migrate"], cwd=self.root, env=env, check=True, capture_output=True
        )
        if self.serve is not None:
            serve = [part.format(port=self.port) for part in self.serve]
        elif self.root == ROOT:
            serve = [sys.executable, "-c", _SERVE.format(port=self.port)]
        else:
            serve = [*python, "serve", "--port", str(self.port)]
            if (
                "--access-log"
                in subprocess.run(
                    [*python, "serve", "--help"],
                    cwd=self.root,
                    env=env,
                    capture_output=True,
                    text=True,
                ).stdout
            ):
                serve.append("--no-access-log")  # older checkouts had no such option
        log_path = self.log_path or Path(self._tmp.name) / "serve.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                serve,
                cwd=self.root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # stop() signals the workers too
            )
        try:
            wait_until(
                "the gateway", f"{self.url}/api/v1/health", self.process, time.monotonic() + 120
            )
        except RuntimeError as exc:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; {' '.join(serve)}:\n{tail}") from None
        with httpx.Client(base_url=self.url, timeout=30) as client:
            login = client.post(
                "/api/v1/login/access-token",
                data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
            )
            login.raise_for_status()
            token = login.json()["access_token"]
            created = client.post(
                "/api/v1/api-keys",
                json={"name": "bench"},
                headers={"Authorization": f"Bearer {token}"},
            )
            created.raise_for_status()
        self.headers = {"Authorization": f"Bearer {created.json()['key']}"}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            stop(self.process)
        self._tmp.cleanup()
