"""PostgreSQL connections killed under the app (`pg_terminate_backend`), mid-request and
between requests: every answer is a success or a clear 503, never a 500; nothing is left
checked out; and the requests after it are served normally."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.api.llm_faults_support import Headers
from tests.faults.leaks import settled, snapshot

pytestmark = pytest.mark.usefixtures("no_server_errors")

# Routes that read the database on every call (admin routes skip the credential cache).
DB_ROUTES = ["/api/v1/users", "/api/v1/llm-settings", "/api/v1/api-keys"]


async def _terminate_app_backends(database_url: str) -> int:
    """Kill every backend connected to the app's database; how many there were."""
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database="postgres", timeout=5
    )
    try:
        killed = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database,
        )
        return len(killed)
    finally:
        await conn.close()


def _clear(response: httpx.Response) -> None:
    """A success, or a 503 that says the database is the trouble."""
    assert response.status_code in (200, 503), f"{response.status_code}: {response.text[:300]}"
    if response.status_code == 503:
        assert "database" in response.text.lower(), response.text


@pytest.fixture
def postgres_only(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    return database_url


async def test_connections_killed_mid_request_then_served_again(
    client: httpx.AsyncClient, admin_headers: Headers, postgres_only: str
) -> None:
    for path in DB_ROUTES:  # warm the pool
        assert (await client.get(path, headers=admin_headers)).status_code == 200
    baseline = snapshot(set())
    stop_at = time.monotonic() + 3.0
    answers: list[httpx.Response] = []

    async def load() -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            answers.append(await client.get(DB_ROUTES[n % 3], headers=admin_headers))

    async def killer() -> int:
        killed = 0
        while time.monotonic() < stop_at - 0.5:
            await asyncio.sleep(0.3)
            killed += await _terminate_app_backends(postgres_only)
        return killed

    *_, killed = await asyncio.gather(*(load() for _ in range(8)), killer())
    assert killed > 0, "no connection was ever killed: the test proved nothing"
    for response in answers:
        _clear(response)
    after = await settled(baseline, set())
    assert after.within(baseline), f"left behind: before {baseline}, after {after}"
    started = time.monotonic()
    for path in DB_ROUTES:
        response = await client.get(path, headers=admin_headers)
        assert response.status_code == 200, response.text
    assert time.monotonic() - started < 10


async def test_pooled_connections_killed_between_requests_are_replaced(
    client: httpx.AsyncClient, admin_headers: Headers, postgres_only: str
) -> None:
    """The pool's idle connections all died (a PostgreSQL restart, a proxy's idle cut): the
    next request of every kind still gets a 200 (pre-ping replaces them)."""
    await asyncio.gather(*(client.get(p, headers=admin_headers) for p in DB_ROUTES * 3))
    assert await _terminate_app_backends(postgres_only) > 0
    for path in DB_ROUTES:
        response = await client.get(path, headers=admin_headers)
        assert response.status_code == 200, response.text
    login = await client.post(
        "/api/v1/login/access-token",
        data={"username": "nobody@example.com", "password": "wrong-password"},
    )
    assert login.status_code == 400
