"""SIGTERM under `python -m app serve`: unready at once, drain, let streams finish, then exit."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.serving import ServedApp, admin_headers, app_env, migrate
from tests.upstream import StandInServer

pytestmark = pytest.mark.timeout(90)

CHAT = {
    "model": "llama-3.2-3b-instruct",
    "messages": [{"role": "user", "content": "count"}],
    "stream": True,
}


async def read_stream(
    client: httpx.AsyncClient, started: asyncio.Event | None = None
) -> tuple[int, bool]:
    """Stream one chat completion; (content chunks seen, whether `[DONE]` arrived).

    A connection cut mid-stream counts as the chunks seen so far, without `[DONE]`.
    """
    chunks, done = 0, False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=CHAT) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    done = True
                    continue
                choices = json.loads(data).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    chunks += 1
                    if started is not None:
                        started.set()
    except httpx.TransportError:
        pass
    return chunks, done


async def wait_for_status(client: httpx.AsyncClient, path: str, status: int, within: float) -> None:
    """Poll `path` until it answers `status`; fail after `within` seconds."""
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        response = await client.get(path)
        last = response.status_code, response.text
        if response.status_code == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not answer {status} within {within} s (last: {last})")


def app_with(tmp_path: Path, upstream: StandInServer, workers: int, **env: str) -> ServedApp:
    """A migrated SQLite app served by `python -m app serve`, not started yet."""
    full_env = app_env(f"sqlite+aiosqlite:///{tmp_path}/app.db", upstream.base_url, **env)
    migrate(full_env)
    return ServedApp(full_env, tmp_path / "serve.log", workers=workers)


async def test_sigterm_drains_and_lets_live_streams_finish(tmp_path: Path) -> None:
    """A stream open at SIGTERM and one opened during the drain both end with `[DONE]`."""
    with (
        StandInServer(stream_chunks=30, chunk_interval=0.1) as upstream,
        app_with(
            tmp_path, upstream, 2, SHUTDOWN_DRAIN_SECONDS="2", SHUTDOWN_GRACE_SECONDS="20"
        ) as app,
    ):
        headers = admin_headers(app.url)
        async with httpx.AsyncClient(base_url=app.url, headers=headers, timeout=30) as client:
            await wait_for_status(client, "/api/v1/health/ready", 200, within=10)
            streaming = asyncio.Event()
            before = asyncio.create_task(read_stream(client, streaming))
            await asyncio.wait_for(streaming.wait(), 10)

            signalled = time.monotonic()
            app.terminate()
            await wait_for_status(client, "/api/v1/health/ready", 503, within=1.5)
            assert (await client.get("/api/v1/health/ready")).json() == {"detail": "shutting down"}
            assert (await client.get("/api/v1/health")).status_code == 200  # still live
            during = asyncio.create_task(read_stream(client))
            assert (await client.get("/v1/models")).status_code == 200
            assert time.monotonic() - signalled < 2, "the drain ended before the test's requests"

            assert await before == (30, True)
            assert await during == (30, True)
        returncode = await asyncio.to_thread(app.wait, 30)
    took = time.monotonic() - signalled
    assert took < 15, f"took {took:.1f} s to exit after SIGTERM"
    assert "timeout graceful shutdown exceeded" not in app.log(), app.log()
    assert returncode in (0, -15), app.log()


async def test_grace_bounds_a_stream_that_would_outlast_it(tmp_path: Path) -> None:
    """A stream longer than SHUTDOWN_GRACE_SECONDS is cut when the grace runs out, and the
    server then stops accepting connections and exits."""
    with (
        StandInServer(stream_chunks=400, chunk_interval=0.05) as upstream,
        app_with(
            tmp_path, upstream, 1, SHUTDOWN_DRAIN_SECONDS="1", SHUTDOWN_GRACE_SECONDS="3"
        ) as app,
    ):
        headers = admin_headers(app.url)
        async with httpx.AsyncClient(base_url=app.url, headers=headers, timeout=30) as client:
            streaming = asyncio.Event()
            long_stream = asyncio.create_task(read_stream(client, streaming))
            await asyncio.wait_for(streaming.wait(), 10)
            signalled = time.monotonic()
            app.terminate()
            await wait_for_status(client, "/api/v1/health/ready", 503, within=1)
            chunks, done = await asyncio.wait_for(long_stream, 15)
            cut_after = time.monotonic() - signalled
        await asyncio.to_thread(app.wait, 15)
        async with httpx.AsyncClient(timeout=2) as fresh:
            with pytest.raises(httpx.ConnectError):
                await fresh.get(f"{app.url}/api/v1/health")
    assert not done
    assert 0 < chunks < 400
    assert 2.5 < cut_after < 6, f"stream cut {cut_after:.1f} s after SIGTERM (grace 3 s)"
