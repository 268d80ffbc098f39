"""The real server process, started the way `make run` starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.upstream import StandInServer, unused_url

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMSTUDIO_", "OPENAI_"))}
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        FIRST_SUPERUSER_EMAIL="boss@example.com",
        FIRST_SUPERUSER_PASSWORD="boss-password-1",
        SECRET_KEY="cli-test-secret-0123456789-0123456789",
        # SIGTERM's drain is tested in tests/deploy; here it would add 5 s to every stop.
        SHUTDOWN_DRAIN_SECONDS="0",
        **extra,
    )
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app", *args],
        cwd=tmp_cwd(env),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tmp_cwd(env: dict[str, str]) -> str:
    # Run outside the repo so that no .env file there can leak into the test.
    return str(Path(env["DATABASE_URL"].split("///", 1)[1]).parent)


@contextmanager
def running_server(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        cwd=tmp_cwd(env),
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited early:\n{proc.stdout.read() if proc.stdout else ''}")
            try:
                httpx.get(f"{url}/api/v1/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start within 30 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_migrate_then_serve_then_login_over_http(tmp_path: Path) -> None:
    env = _env(tmp_path, PYTHONPATH=str(ROOT))
    migrated = _cli(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    admin = _cli(env, "create-admin")
    assert "boss@example.com created" in admin.stderr
    again = _cli(env, "create-admin")
    assert "already exists" in again.stderr

    with running_server(env) as url:
        assert httpx.get(f"{url}/api/v1/health/ready").status_code == 200
        token = httpx.post(
            f"{url}/api/v1/login/access-token",
            data={"username": "boss@example.com", "password": "boss-password-1"},
        )
        assert token.status_code == 200, token.text
        me = httpx.get(
            f"{url}/api/v1/users/me",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert me.json()["is_superuser"] is True
        assert httpx.get(f"{url}/docs").status_code == 200


def test_unmigrated_database_serves_but_is_not_ready(tmp_path: Path) -> None:
    env = _env(tmp_path, PYTHONPATH=str(ROOT))
    with running_server(env) as url:
        assert httpx.get(f"{url}/api/v1/health").status_code == 200
        ready = httpx.get(f"{url}/api/v1/health/ready")
        assert ready.status_code == 503
        assert "python -m app migrate" in ready.json()["detail"]


def test_login_on_an_unmigrated_database_is_503_naming_the_fix(tmp_path: Path) -> None:
    env = _env(tmp_path, PYTHONPATH=str(ROOT))
    with running_server(env) as url:
        form = {"username": "boss@example.com", "password": "boss-password-1"}
        response = httpx.post(f"{url}/api/v1/login/access-token", data=form)
    assert response.status_code == 503
    assert "python -m app migrate" in response.json()["detail"]


def test_unreachable_database_is_not_ready(tmp_path: Path) -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    env = {**_env(tmp_path, PYTHONPATH=str(ROOT)), "DATABASE_URL": dead}
    env_cwd = {**env, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"}
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        cwd=tmp_cwd(env_cwd),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                ready = httpx.get(f"{url}/api/v1/health/ready", timeout=10)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready.status_code == 503
        assert ready.json()["detail"].startswith("database unreachable (")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_production_mode_refuses_default_secret(tmp_path: Path) -> None:
    env = _env(tmp_path, PYTHONPATH=str(ROOT), ENVIRONMENT="production")
    del env["SECRET_KEY"]
    result = _cli(env, "serve", "--port", str(free_port()))
    assert result.returncode == 3
    assert "configuration error: SECRET_KEY must be set in production" in result.stderr
    assert "Traceback" not in result.stderr


def test_base_url_with_credentials_is_refused_at_startup_without_echoing_them(
    tmp_path: Path,
) -> None:
    env = _env(
        tmp_path, PYTHONPATH=str(ROOT), LMSTUDIO_BASE_URL="http://lm:hunter2-pw@127.0.0.2:1234/v1"
    )
    result = _cli(env, "serve", "--port", str(free_port()))
    assert result.returncode == 3
    assert (
        "configuration error: LMSTUDIO_BASE_URL: must not contain a user name or password"
        in result.stderr
    )
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_models_ask_and_settings_commands(tmp_path: Path, upstream: StandInServer) -> None:
    env = _env(tmp_path, PYTHONPATH=str(ROOT), LMSTUDIO_BASE_URL=upstream.base_url)
    assert _cli(env, "migrate").returncode == 0

    listed = _cli(env, "models")
    assert listed.returncode == 0, listed.stderr
    for model in ("llama-3.2-3b-instruct", "mistral-7b-instruct", "codellama-7b"):
        assert model in listed.stdout

    unset = _cli(env, "ask", "hello")
    assert unset.returncode == 3
    assert "error: No LM Studio model is configured" in unset.stderr
    assert "Traceback" not in unset.stderr

    saved = _cli(env, "settings", "--lmstudio-model", "codellama-7b")
    assert saved.returncode == 0, saved.stderr
    assert "lmstudio_model\tcodellama-7b\n" in saved.stdout

    answered = _cli(env, "ask", "hello there")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout == "Echo: hello there\n"
    assert upstream.chat_requests[-1].json["model"] == "codellama-7b"

    invalid = _cli(env, "settings", "--lmstudio-model", "")
    assert invalid.returncode == 3
    assert "error: lmstudio_model: String should have at least 1 character" in invalid.stderr


def test_llm_commands_report_an_unreachable_lm_studio(tmp_path: Path) -> None:
    url = unused_url()
    env = _env(tmp_path, PYTHONPATH=str(ROOT), LMSTUDIO_BASE_URL=url)
    assert _cli(env, "migrate").returncode == 0
    result = _cli(env, "models")
    assert result.returncode == 4
    assert f"error: Cannot connect to LM Studio at {url}: is LM Studio's server running?" in (
        result.stderr
    )
