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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from app.core.config import Settings, set_settings
from app.core.db import dispose_engine
from app.core.migrate import upgrade
from app.main import create_app

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
        "lmstudio_base_url": "http://127.0.0.1:9/v1",
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
async def database_url(scratch_databases: ScratchDatabases) -> AsyncIterator[str]:
    """A migrated database, configured as the process's database for the session."""
    url = await scratch_databases.new()
    set_settings(test_settings(url))
    await dispose_engine()
    await upgrade()
    yield url
    await dispose_engine()
    set_settings(None)


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


async def serve_app() -> RunningServer:
    """Start the real app under uvicorn on a free loopback port."""
    config = uvicorn.Config(
        create_app, factory=True, host="127.0.0.1", port=0, log_level="warning", lifespan="on"
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
    async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
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
