"""Credential changes reach another worker process at once on PostgreSQL (LISTEN/NOTIFY).

Worker 1 is the app served in this process; worker 2 is `python -m app serve` in a
subprocess on the same database, with AUTH_CACHE_SECONDS=30: without a notification it
would keep serving a changed credential from its cache for 30 s or more.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.core.db import get_sessionmaker
from app.services.llm.settings import SettingsWatcher
from tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    SECRET_KEY,
    UserFactory,
    free_port,
    login,
)

ROOT = Path(__file__).resolve().parents[2]
ME = "/api/v1/users/me"
BOUND = 5.0  # generous: the notification itself takes milliseconds


@pytest.fixture(scope="module")
async def worker_2(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """Base URL of a second app process on the same PostgreSQL database."""
    if not SettingsWatcher.applies_to(database_url):
        pytest.skip("only PostgreSQL notifies other workers; SQLite runs one process")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMSTUDIO_", "OPENAI_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        FIRST_SUPERUSER_EMAIL=ADMIN_EMAIL,
        FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
        AUTH_CACHE_SECONDS="30",
        LOG_LEVEL="WARNING",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "serve",
        "--port",
        str(port),
        "--no-access-log",
        cwd=tmp_path_factory.mktemp("worker2"),  # no .env file here
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            deadline = time.monotonic() + 60
            while True:
                assert process.returncode is None, "worker 2 exited early"
                assert time.monotonic() < deadline, "worker 2 did not start within 60 s"
                try:
                    if (await http.get("/api/v1/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            await _wait_until_listening(2)
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)


async def _wait_until_listening(workers: int) -> None:
    # Each worker's watcher holds one connection whose last statement is a LISTEN.
    deadline = time.monotonic() + 10
    while True:
        async with get_sessionmaker()() as session:
            listening = (
                await session.exec(  # type: ignore[call-overload]
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                    )
                )
            ).scalar_one()
        if listening >= workers:
            assert listening == workers, "one LISTEN connection per worker, not one per channel"
            return
        assert time.monotonic() < deadline, f"{listening} of {workers} workers listening"
        await asyncio.sleep(0.1)


async def _refused_on(url: str, headers: dict[str, str]) -> float:
    """Seconds until worker 2 answers 401 to `headers` (fails past BOUND)."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url) as http:
        while True:
            status = (await http.get(ME, headers=headers)).status_code
            if status == 401:
                return time.monotonic() - started
            assert status == 200
            assert time.monotonic() - started < BOUND, f"still {status} after {BOUND} s"
            await asyncio.sleep(0.05)


async def _served_by(url: str, headers: dict[str, str]) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get(ME, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_deactivation_on_worker_1_is_refused_by_worker_2(
    client: httpx.AsyncClient, worker_2: str, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user()
    await _served_by(worker_2, user.headers)  # now in worker 2's 30 s cache
    gone = await client.delete(f"/api/v1/users/{user.id}", headers=admin_headers)
    assert gone.status_code == 200
    await _refused_on(worker_2, user.headers)


async def test_a_revoked_api_key_on_worker_1_is_refused_by_worker_2(
    client: httpx.AsyncClient, worker_2: str, make_user: UserFactory
) -> None:
    user = await make_user()
    created = (
        await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    ).json()
    key = {"Authorization": f"Bearer {created['key']}"}
    await _served_by(worker_2, key)
    revoked = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=user.headers)
    assert revoked.status_code == 204
    await _refused_on(worker_2, key)
    await _served_by(worker_2, user.headers)  # the user's other credentials still work


async def test_a_password_change_on_worker_1_ends_sessions_on_worker_2(
    client: httpx.AsyncClient, worker_2: str, make_user: UserFactory
) -> None:
    user = await make_user()
    await _served_by(worker_2, user.headers)
    changed = await client.patch(
        "/api/v1/users/me/password",
        json={"current_password": user.password, "new_password": "changed-on-worker-1"},
        headers=user.headers,
    )
    assert changed.status_code == 200
    await _refused_on(worker_2, user.headers)
    async with httpx.AsyncClient(base_url=worker_2) as http:
        await login(http, user.email, "changed-on-worker-1")


async def test_a_role_change_on_worker_1_is_seen_by_worker_2(
    client: httpx.AsyncClient, worker_2: str, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user()
    assert (await _served_by(worker_2, user.headers))["is_superuser"] is False
    promoted = await client.patch(
        f"/api/v1/users/{user.id}", json={"is_superuser": True}, headers=admin_headers
    )
    assert promoted.status_code == 200
    started = time.monotonic()
    while (await _served_by(worker_2, user.headers))["is_superuser"] is not True:
        assert time.monotonic() - started < BOUND, f"role change not seen after {BOUND} s"
        await asyncio.sleep(0.05)
