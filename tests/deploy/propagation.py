"""How long an LLM-settings change saved through one process takes to show in another.

Used by tests/deploy/test_settings_propagation.py (a few changes, a generous bound) and by
`python -m benchmarks serving` (20 changes per case, p50 and max).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import httpx

from tests.deploy.private_postgres import PrivatePostgres
from tests.deploy.serving import ServedApp, admin_headers, app_env, migrate

SETTINGS = "/api/v1/llm-settings"
_values = itertools.count(1)


async def change_and_wait(
    writer: httpx.AsyncClient, reader: httpx.AsyncClient, within: float = 15
) -> float:
    """Save a new LM Studio model through `writer`; seconds until `reader` returns it.

    The clock starts when the save has committed (its response arrived). A save refused
    because the database is still coming back is retried until `within` seconds have passed.
    """
    value = f"model-{next(_values)}"
    deadline = time.monotonic() + within
    while True:
        try:
            saved = await writer.patch(SETTINGS, json={"lmstudio_model": value})
            if saved.status_code == 200:
                break
            failure = f"{saved.status_code} {saved.text}"
        except httpx.TransportError as exc:
            failure = repr(exc)
        if time.monotonic() > deadline:
            raise AssertionError(f"could not save the settings: {failure}")
        await asyncio.sleep(0.1)
    committed = time.monotonic()
    while time.monotonic() - committed < within:
        try:
            seen = await reader.get(SETTINGS)
            if seen.status_code == 200 and seen.json()["lmstudio_model"] == value:
                return time.monotonic() - committed
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.01)
    raise AssertionError(f"the other process did not see {value} within {within} s")


async def terminate_listeners(pg: PrivatePostgres) -> int:
    """pg_terminate_backend every LISTEN connection; how many there were."""
    import asyncpg

    connection = await asyncpg.connect(
        host="127.0.0.1", port=pg.port, user="postgres", database="postgres", timeout=10
    )
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return len(rows)


async def wait_for_listeners(pg: PrivatePostgres, count: int, within: float = 20) -> None:
    """Wait until `count` LISTEN connections are back (each worker reconnected)."""
    import asyncpg

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            connection = await asyncpg.connect(
                host="127.0.0.1", port=pg.port, user="postgres", database="postgres", timeout=5
            )
            try:
                found = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'"
                )
            finally:
                await connection.close()
            if found >= count:
                return
        except (OSError, asyncpg.PostgresError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} LISTEN connections after {within} s")


Disrupt = Callable[[], Awaitable[object]]


async def measure(
    writer: httpx.AsyncClient,
    reader: httpx.AsyncClient,
    changes: int,
    before_each: Disrupt | None = None,
) -> list[float]:
    """`changes` propagation delays (s), each after `before_each()` if given."""
    delays = []
    for _ in range(changes):
        if before_each is not None:
            await before_each()
        delays.append(await change_and_wait(writer, reader))
    return delays


@asynccontextmanager
async def two_processes(
    pg: PrivatePostgres, upstream_url: str, work_dir: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two `python -m app serve` processes on one new database; admin clients to each."""
    await pg.execute("CREATE DATABASE app")
    env = app_env(pg.url("app"), upstream_url)
    await asyncio.to_thread(migrate, env)
    with ExitStack() as stack:
        apps = [ServedApp(env, work_dir / f"serve-{name}.log", workers=1) for name in ("a", "b")]
        for app in apps:
            stack.callback(app.kill)
        await asyncio.gather(*(asyncio.to_thread(app.start) for app in apps))
        headers = await asyncio.to_thread(admin_headers, apps[0].url)
        async with (
            httpx.AsyncClient(base_url=apps[0].url, headers=headers, timeout=30) as writer,
            httpx.AsyncClient(base_url=apps[1].url, headers=headers, timeout=30) as reader,
        ):
            yield writer, reader
