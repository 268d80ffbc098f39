"""Shared fixtures: a real database per backend, the real app served over a real socket.

Tests that touch the database run once per backend: SQLite (a temp file) and the real
PostgreSQL at 127.0.0.1:5432 (a fresh database per run, dropped afterwards). With CI set,
an unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.core.config import Settings, get_settings, set_settings
from app.core.db import dispose_engine, get_sessionmaker
from app.core.migrate import upgrade
from app.main import create_app
from app.models import LLMSettings
from app.services.llm import clear_discovery_cache
from app.services.llm.settings import invalidate_cache
from app.services.llm.structured import forget_modes
from tests.upstream import StandInServer

# Bedrock's credential chain would otherwise ask the instance metadata service (an address
# off this machine) whenever a test lists Bedrock's models or checks a saved model name.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-for-tests"
SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def test_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for a test run: no .env file, known secrets, the given database."""
    values: dict[str, object] = {
        "database_url": database_url,
        "secret_key": SECRET_KEY,
        "first_superuser_email": ADMIN_EMAIL,
        "first_superuser_password": ADMIN_PASSWORD,
        # Nothing listens on port 9: no test reaches a real provider (saving a model name
        # asks its provider whether it offers it).
        "lmstudio_base_url": "http://127.0.0.1:9/v1",
        "openai_base_url": "http://127.0.0.1:9/v1",
        "openrouter_base_url": "http://127.0.0.1:9/api/v1",
        "ollama_base_url": "http://127.0.0.1:9",
        "bedrock_endpoint_url": "http://127.0.0.1:9",
        "llm_retry_backoff": 0.01,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# ── databases ────────────────────────────────────────────────────────────────


async def _postgres_admin_connection() -> asyncpg.Connection:
    url = make_url(POSTGRES_URL)
    try:
        return await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, database=url.database, timeout=5
        )
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL unreachable at {url.host}:{url.port} ({exc})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class ScratchDatabases:
    """Creates empty databases of one backend and drops them at the end."""

    backend: str
    tmp_dir: Path
    created: list[str]

    async def new(self) -> str:
        """The URL of a new, empty database."""
        name = f"test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        if self.backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.tmp_dir / name}.db"
        conn = await _postgres_admin_connection()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        """Drop every database this object created."""
        if not self.created:
            return
        conn = await _postgres_admin_connection()
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def scratch_databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ScratchDatabases]:
    """A maker of empty databases, once per backend."""
    scratch = ScratchDatabases(request.param, tmp_path_factory.mktemp(request.param), [])
    yield scratch
    await scratch.drop_all()


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[StandInServer]:
    """The stand-in LM Studio server for the whole session (reset by `upstream`)."""
    with StandInServer() as server:
        yield server


@pytest.fixture
def upstream(upstream_server: StandInServer) -> Iterator[StandInServer]:
    """The stand-in LM Studio server, with no scripts and no recorded requests."""
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


AWS_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Bedrock's credential chain finds nothing, whatever the machine running the tests has."""
    for name in AWS_CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))


@pytest.fixture(scope="session")
async def database_url(
    scratch_databases: ScratchDatabases, upstream_server: StandInServer
) -> AsyncIterator[str]:
    """A migrated database, configured as the process's database for the session."""
    url = await scratch_databases.new()
    set_settings(test_settings(url, lmstudio_base_url=upstream_server.base_url))
    await dispose_engine()
    await upgrade()
    yield url
    await dispose_engine()
    set_settings(None)


@dataclass
class LLMEnv:
    """Changes the env-level settings for one test; undone afterwards."""

    original: Settings

    def set(self, **changes: object) -> Settings:
        """Apply `changes` (field names of Settings) on top of the session's settings."""
        values = {**self.original.model_dump(), **changes}
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        set_settings(settings)
        return settings


@pytest.fixture
async def llm_env(database_url: str, upstream: StandInServer) -> AsyncIterator[LLMEnv]:
    """A clean LLM state: no saved llmsettings row, empty caches, env as the session set it."""
    original = get_settings()

    async def clean() -> None:
        async with get_sessionmaker()() as session:
            row = await session.get(LLMSettings, 1)
            if row is not None:
                await session.delete(row)
                await session.commit()
        invalidate_cache()
        forget_modes()
        clear_discovery_cache()

    await clean()
    yield LLMEnv(original)
    set_settings(original)
    await clean()


# ── the app over HTTP ────────────────────────────────────────────────────────


@dataclass
class RunningServer:
    """A uvicorn server serving the app on a loopback port, in the test's event loop."""

    base_url: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        """Shut the server down gracefully."""
        self.server.should_exit = True
        await self.task


async def serve_app(app: FastAPI | None = None) -> RunningServer:
    """Start `app` (default: the real app) under uvicorn on a free loopback port."""
    config = uvicorn.Config(
        app or create_app,
        factory=app is None,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        proxy_headers=True,  # as `python -m app serve` runs it
        forwarded_allow_ips=get_settings().forwarded_allow_ips,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(f"http://127.0.0.1:{port}", server, task)


@pytest.fixture(scope="session")
async def app_url(database_url: str) -> AsyncIterator[str]:
    """Base URL of the real app, served over a real socket for the whole session."""
    running = await serve_app()
    yield running.base_url
    await running.stop()


@pytest.fixture(scope="session")
async def client(app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client pointed at the running app."""
    # Idle connections are dropped after 2 s, before uvicorn's 5 s keep-alive closes them:
    # with both at 5 s, a request sent on a connection the server was closing failed with a
    # ReadError (seen once, in a racing-creates test, in a full run).
    limits = httpx.Limits(keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=app_url, timeout=30, limits=limits) as http:
        yield http


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    """Authorization headers for a user, via the real login endpoint."""
    response = await client.post(
        "/api/v1/login/access-token", data={"username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="session")
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    """Bearer headers of the first admin (created from settings at startup)."""
    return await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


@dataclass
class AppUser:
    """A user created through the admin API, with ways to authenticate as them."""

    id: str
    email: str
    password: str
    headers: dict[str, str]


UserFactory = Callable[..., Awaitable[AppUser]]


@pytest.fixture(scope="session")
async def make_user(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> UserFactory:
    """Create a user through the API and log them in."""

    async def make(*, is_superuser: bool = False, log_in: bool = True) -> AppUser:
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        password = "a-good-password"
        response = await client.post(
            "/api/v1/users",
            json={"email": email, "password": password, "is_superuser": is_superuser},
            headers=admin_headers,
        )
        assert response.status_code == 201, response.text
        headers = await login(client, email, password) if log_in else {}
        return AppUser(response.json()["id"], email, password, headers)

    return make


# ── one backend for tests of upstream behaviour ──────────────────────────────

# These files test how LLM calls behave (faults, retries, the structured ladder), which does
# not depend on the database backend: they run once, to keep `make test` under ten minutes.
# The API's fault files run on PostgreSQL (whose pool is the one that can leak a
# checked-out connection); the service-level ones, tool calling and embeddings on SQLite.
# The authorization matrix (who may call each route) reads roles the same way on both
# backends: it runs on PostgreSQL, as production does.
ONE_BACKEND = {
    "test_lmstudio.py": "sqlite",
    "test_openai.py": "sqlite",
    "test_structured.py": "sqlite",
    "test_llm_request_rules.py": "postgres",
    "test_openai_compat_faults.py": "postgres",
    "test_openai_compat_tools.py": "sqlite",
    "test_openai_embeddings.py": "sqlite",
    "test_tools.py": "sqlite",
    "test_llm_faults.py": "postgres",
    "test_authorization_matrix.py": "postgres",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the other backend's copies of the `ONE_BACKEND` files."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        backend = params.params.get("scratch_databases") if params else None
        wanted = ONE_BACKEND.get(item.path.name)
        (drop if wanted is not None and backend not in (None, wanted) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
