"""`python -m app serve` in a process of its own, as production runs it, for the deploy tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, SECRET_KEY, free_port

ROOT = Path(__file__).resolve().parents[2]


def app_env(database_url: str, upstream_url: str, **extra: str) -> dict[str, str]:
    """The environment of a served app: known secrets, this database and upstream."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLM_", "LMSTUDIO_", "OPENAI_", "SHUTDOWN_", "DATABASE_"))
    }
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        FIRST_SUPERUSER_EMAIL=ADMIN_EMAIL,
        FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
        LMSTUDIO_BASE_URL=upstream_url,
        LMSTUDIO_MODEL="llama-3.2-3b-instruct",
        LLM_RETRY_BACKOFF="0.01",
        **extra,
    )
    return env


def migrate(env: dict[str, str], python: str = sys.executable, cwd: Path = ROOT) -> None:
    """`python -m app migrate` with this environment."""
    subprocess.run(
        [python, "-m", "app", "migrate"], cwd=cwd, env=env, check=True, capture_output=True
    )


class ServedApp:
    """`python -m app serve --workers N` on a free port; stderr kept in `log_path`."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        workers: int = 1,
        python: str = sys.executable,
        cwd: Path = ROOT,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self.command = [python, "-m", "app", "serve", "--host", "127.0.0.1"]
        self.command += ["--port", str(self.port), "--workers", str(workers), "--no-access-log"]
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Self:
        """Start serving; return once /api/v1/health answers (fails if the process dies)."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() ends the workers too
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"serve did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """Send SIGTERM (what Kubernetes and `docker stop` send)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its return code."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """End the process and its workers at once."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


def admin_headers(url: str) -> dict[str, str]:
    """Bearer headers of the first admin, through the real login endpoint."""
    response = httpx.post(
        f"{url}/api/v1/login/access-token",
        data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
