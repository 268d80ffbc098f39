"""The real app in a process of its own, for the whole-app tiers (fuzz, faults, soak, logs).

The fuzzer and the soak send requests from blocking clients and from other processes, so the
app cannot share the test's event loop: it runs as `python -m app serve` (benchmarks'
`Gateway`), on a fresh database of the chosen backend, with the stand-in as LM Studio and
its stderr (LOG_LEVEL=DEBUG by default) kept in a file the log test reads.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from benchmarks.processes import ADMIN_EMAIL, ADMIN_PASSWORD, Gateway
from tests.conftest import SECRET_KEY, ScratchDatabases
from tests.upstream import StandInServer, unused_url

MODEL = "llama-3.2-3b-instruct"
USER_PASSWORD = "user-password-for-fuzzing"
OPENAI_KEY = "sk-test-openai-key-never-logged-0123456789"
LMSTUDIO_KEY = "lm-studio-key-never-logged-9876543210"


@dataclass
class Account:
    """A user of the running app and the ways to authenticate as them."""

    id: str
    email: str
    password: str
    token: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        """Bearer JWT headers."""
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class RunningApp:
    """The app's process, its accounts, and every secret it was handed (for the log test)."""

    url: str
    gateway: Gateway
    admin: Account
    user: Account
    log_path: Path
    database_url: str
    secrets: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        """Everything the process logged so far."""
        return self.log_path.read_text(errors="replace")


def _account(client: httpx.Client, admin: dict[str, str] | None, email: str, pw: str) -> Account:
    if admin is not None:
        created = client.post("/api/v1/users", json={"email": email, "password": pw}, headers=admin)
        created.raise_for_status()
    login = client.post("/api/v1/login/access-token", data={"username": email, "password": pw})
    login.raise_for_status()
    token = login.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    me = client.get("/api/v1/users/me", headers=headers)
    me.raise_for_status()
    key = client.post("/api/v1/api-keys", json={"name": "tests"}, headers=headers)
    key.raise_for_status()
    return Account(me.json()["id"], email, pw, token, key.json()["key"])


class AppProcess:
    """Start the app (one worker) on a new `backend` database; stop it and drop the database.

    `env` overrides the app's environment (e.g. `LMSTUDIO_TIMEOUT`).
    """

    def __init__(self, backend: str, upstream: StandInServer, tmp_dir: Path, **env: str) -> None:
        self.backend = backend
        self.upstream = upstream
        self.tmp_dir = tmp_dir
        self.env = env
        self._stack = ExitStack()
        self._databases = ScratchDatabases(backend, tmp_dir, [])
        self.app: RunningApp | None = None

    def __enter__(self) -> RunningApp:
        database_url = asyncio.run(self._databases.new())
        self._stack.callback(lambda: asyncio.run(self._databases.drop_all()))
        log_path = self.tmp_dir / f"app-{uuid.uuid4().hex[:8]}.log"
        env = {
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET_KEY,
            "LOG_LEVEL": "DEBUG",
            "LOG_EVERYTHING": "1",
            "LMSTUDIO_API_KEY": LMSTUDIO_KEY,  # sent to the stand-in, which accepts any
            "LMSTUDIO_MAX_RETRIES": "1",
            "LLM_RETRY_BACKOFF": "0.01",
            "LMSTUDIO_TIMEOUT": "5",
            "LLM_MAX_CONCURRENCY": "64",
            "LLM_QUEUE_TIMEOUT": "5",
            # Every provider points at loopback: nothing the fuzzer saves can send traffic
            # off this machine. The key is there so the log test can look for it.
            "OPENAI_BASE_URL": unused_url(),
            "OPENAI_API_KEY": OPENAI_KEY,
            **self.env,
        }
        gateway = Gateway(self.upstream.base_url, MODEL, log_path=log_path, **env)
        try:
            self._stack.enter_context(gateway)
        except BaseException:
            self._stack.close()
            raise
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            admin = _account(client, None, ADMIN_EMAIL, ADMIN_PASSWORD)
            user = _account(
                client, admin.headers, f"user-{uuid.uuid4().hex[:8]}@example.com", USER_PASSWORD
            )
        bench_key = gateway.headers["Authorization"].removeprefix("Bearer ")
        secrets = [ADMIN_PASSWORD, USER_PASSWORD, SECRET_KEY, OPENAI_KEY, LMSTUDIO_KEY, bench_key]
        secrets += [a.token for a in (admin, user)] + [a.api_key for a in (admin, user)]
        self.app = RunningApp(gateway.url, gateway, admin, user, log_path, database_url, secrets)
        return self.app

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()
