"""Policy limits hold exactly across processes: two `python -m app serve` workers on one
PostgreSQL database, hammered at once through one API key, admit exactly the limit."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.services.llm.settings import SettingsWatcher
from tests.conftest import UserFactory, free_port
from tests.deploy.serving import ROOT, app_env
from tests.upstream import StandInServer

LOCAL = "llama-3.2-3b-instruct"
CHAT = {"model": f"lmstudio/{LOCAL}", "messages": [{"role": "user", "content": "hi"}]}


async def _serve(
    database_url: str, upstream: StandInServer, cwd: Path, **extra: str
) -> tuple[str, object]:
    port = free_port()
    env = app_env(
        database_url,
        upstream.base_url,
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
        SHUTDOWN_DRAIN_SECONDS="0",  # nothing routes to them: stop at once
        **extra,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "serve",
        "--port",
        str(port),
        "--no-access-log",
        cwd=cwd,
        env=env,
    )
    return f"http://127.0.0.1:{port}", process


@pytest.fixture(scope="module", params=["database", "redis"])
async def workers(
    request: pytest.FixtureRequest,
    database_url: str,
    upstream_server: StandInServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[list[str]]:
    """Base URLs of two app processes on the session's PostgreSQL database, counting in the
    database or in Redis."""
    if not SettingsWatcher.applies_to(database_url):
        pytest.skip("several processes share PostgreSQL; SQLite serves one machine")
    extra = {"REDIS_URL": "redis://127.0.0.1:6379/0"} if request.param == "redis" else {}
    started = [
        await _serve(database_url, upstream_server, tmp_path_factory.mktemp(f"w{i}"), **extra)
        for i in range(2)
    ]
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 60
            for url, process in started:
                while True:
                    assert process.returncode is None, "a worker exited early"  # type: ignore[attr-defined]
                    assert time.monotonic() < deadline, "a worker did not start within 60 s"
                    try:
                        if (await http.get(f"{url}/api/v1/health/ready")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
        yield [url for url, _ in started]
    finally:
        for _, process in started:
            process.terminate()  # type: ignore[attr-defined]
        for _, process in started:
            await asyncio.wait_for(process.wait(), 15)  # type: ignore[attr-defined]


async def _key_with(
    client: httpx.AsyncClient, make_user: UserFactory, admin: dict[str, str], policy: dict[str, int]
) -> dict[str, str]:
    user = await make_user()
    made = await client.post("/api/v1/api-keys", json={"name": "hammer"}, headers=user.headers)
    key = made.json()
    saved = await client.patch(
        f"/api/v1/api-keys/{key['id']}", json={"policy": policy}, headers=admin
    )
    assert saved.status_code == 200, saved.text
    return {"Authorization": f"Bearer {key['key']}"}


async def _hammer(
    urls: list[str], headers: dict[str, str], body: dict[str, object], n: int
) -> Counter[int]:
    async with httpx.AsyncClient(timeout=60) as http:
        replies = await asyncio.gather(
            *(
                http.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body, headers=headers)
                for i in range(n)
            )
        )
    return Counter(r.status_code for r in replies)


@pytest.mark.usefixtures("llm_env")
async def test_requests_per_minute_admit_exactly_the_limit_across_two_processes(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    admin_headers: dict[str, str],
    workers: list[str],
) -> None:
    if time.time() % 60 > 45:  # one fixed window for the whole test
        await asyncio.sleep(61 - time.time() % 60)
    headers = await _key_with(client, make_user, admin_headers, {"requests_per_minute": 25})
    statuses = await _hammer(workers, headers, CHAT, 80)
    assert statuses == {200: 25, 429: 55}, statuses


@pytest.mark.usefixtures("llm_env")
async def test_concurrent_streams_admit_exactly_the_limit_across_two_processes(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    admin_headers: dict[str, str],
    workers: list[str],
    upstream: StandInServer,
) -> None:
    headers = await _key_with(client, make_user, admin_headers, {"max_concurrent_streams": 3})
    upstream.slow_stream(n_chunks=10, interval=0.2, times=None)
    statuses = await _hammer(workers, headers, {**CHAT, "stream": True}, 30)
    assert statuses == {200: 3, 429: 27}, statuses
