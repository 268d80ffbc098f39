"""Database failures over HTTP, on both databases: an unexpected error is a clean 500 whose log
line carries a request id and no statement values; a database that goes away is a 503 naming
the cause on every route (OpenAI's shape under /v1), and service resumes when it is back.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.api.errors import install_error_handlers
from app.core.config import get_settings, set_settings
from app.core.db import dispose_engine, get_engine
from tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    POSTGRES_URL,
    UserFactory,
    free_port,
    serve_app,
)
from tests.conftest import test_settings as settings_for

Headers = dict[str, str]
_LOGGERS = ("app", "uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy")
_API_KEY_HASH = re.compile(r"\b[0-9a-f]{64}\b")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The full rendering, traceback included: what a log file would hold.
        self.lines.append(logging.Formatter("%(levelname)s %(name)s %(message)s").format(record))


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every line the app, uvicorn and SQLAlchemy log meanwhile, rendered as a file would."""
    collect = _Collect()
    for name in _LOGGERS:
        logging.getLogger(name).addHandler(collect)
    try:
        yield collect.lines
    finally:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(collect)


# ── an unexpected database error ─────────────────────────────────────────────

_FAILING_TRIGGERS = {
    # Non-constraint errors (a constraint is a 409); PostgreSQL's even quotes the row.
    "postgresql": [
        "CREATE OR REPLACE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused: %', to_jsonb(NEW)::text; END $$",
        'CREATE TRIGGER refuse_user BEFORE INSERT ON "user" '
        "FOR EACH ROW EXECUTE FUNCTION refuse_insert()",
        "CREATE TRIGGER refuse_apikey BEFORE INSERT ON apikey "
        "FOR EACH ROW EXECUTE FUNCTION refuse_insert()",
    ],
    "sqlite": [
        "CREATE TRIGGER refuse_user BEFORE INSERT ON user BEGIN SELECT json('{'); END",
        "CREATE TRIGGER refuse_apikey BEFORE INSERT ON apikey BEGIN SELECT json('{'); END",
    ],
}
_DROP_TRIGGERS = {
    "postgresql": [
        'DROP TRIGGER IF EXISTS refuse_user ON "user"',
        "DROP TRIGGER IF EXISTS refuse_apikey ON apikey",
    ],
    "sqlite": ["DROP TRIGGER IF EXISTS refuse_user", "DROP TRIGGER IF EXISTS refuse_apikey"],
}


@asynccontextmanager
async def inserts_fail(database_url: str) -> AsyncIterator[None]:
    """Make every insert of a user or an API key fail inside the database."""
    backend = make_url(database_url).get_backend_name()
    async with get_engine().begin() as conn:
        for statement in _FAILING_TRIGGERS[backend]:
            await conn.execute(text(statement))
    try:
        yield
    finally:
        async with get_engine().begin() as conn:
            for statement in _DROP_TRIGGERS[backend]:
                await conn.execute(text(statement))


def _assert_clean_500(response: httpx.Response, logs: list[str]) -> None:
    assert response.status_code == 500, response.text
    body = response.json()
    assert body == {"detail": "Internal server error", "request_id": body["request_id"]}
    assert response.headers["X-Request-ID"] == body["request_id"]
    logged = [line for line in logs if body["request_id"] in line]
    assert len(logged) == 1, logs
    assert logged[0].startswith("ERROR app.api unhandled error")
    assert "message withheld" in logged[0]  # the stack is there, the values are not
    # Served by the handler: the server neither saw an exception nor dropped the connection.
    assert not any("Exception in ASGI application" in line for line in logs), logs


async def test_database_error_is_a_clean_500_and_no_hash_reaches_the_log(
    client: httpx.AsyncClient,
    database_url: str,
    admin_headers: Headers,
    make_user: UserFactory,
) -> None:
    user = await make_user()
    body = {"email": f"h-{uuid.uuid4().hex[:8]}@example.com", "password": "password-123"}
    with captured_logs() as logs:
        async with inserts_fail(database_url):
            created = await client.post("/api/v1/users", json=body, headers=admin_headers)
            key = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
        after = await client.get("/api/v1/users/me", headers=user.headers)
    _assert_clean_500(created, logs)
    _assert_clean_500(key, logs)
    assert after.status_code == 200
    everything = "\n".join(logs)
    assert "$argon2" not in everything
    assert not _API_KEY_HASH.search(everything), everything
    assert "refused" not in everything  # PostgreSQL's text, which quotes the row
    assert "malformed" not in everything  # SQLite's


async def test_error_after_the_response_started_ends_the_connection_and_logs_no_text() -> None:
    secret = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0$mid-stream"
    app = FastAPI()
    install_error_handlers(app)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first chunk\n"
        raise RuntimeError(secret)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(chunks())

    running = await serve_app(app)
    try:
        with captured_logs() as logs:
            async with httpx.AsyncClient(base_url=running.base_url) as http:
                with pytest.raises(httpx.RemoteProtocolError):  # cut short, not "complete"
                    await http.get("/stream")
    finally:
        await running.stop()
    assert any("unhandled error" in line and "RuntimeError" in line for line in logs), logs
    assert not any(secret in line for line in logs), logs


async def test_database_error_text_holds_no_statement_values(database_url: str) -> None:
    # What any log line quoting a database error could carry: never the parameters.
    secret = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0$not-a-real-hash"
    async with get_engine().connect() as conn:
        with pytest.raises(DBAPIError) as caught:
            await conn.execute(
                text("INSERT INTO no_such_table (x) VALUES (:secret)"), {"secret": secret}
            )
    rendered = str(caught.value) + repr(caught.value)
    assert "no_such_table" in rendered
    assert secret not in rendered


# ── a database that goes away ────────────────────────────────────────────────


async def _postgres_admin() -> asyncpg.Connection:
    url = make_url(POSTGRES_URL)
    return await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database, timeout=5
    )


@asynccontextmanager
async def database_down(database_url: str) -> AsyncIterator[None]:
    """Make the session's database refuse every connection; restore it afterwards.

    PostgreSQL: the database stops accepting connections and its sessions are terminated.
    SQLite: the pool is emptied (open handles would keep reading the old file) and the file
    is moved away with a folder in its place, so opening it fails.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        admin = await _postgres_admin()
        try:
            await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                url.database,
            )
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')
            await admin.close()
        return
    await dispose_engine()
    path = Path(str(url.database))
    moved = _block_sqlite_file(path)
    try:
        yield
    finally:
        _unblock_sqlite_file(path, moved)


def _block_sqlite_file(path: Path) -> list[tuple[Path, Path]]:
    moved = [(p, p.with_name(p.name + ".away")) for p in path.parent.glob(path.name + "*")]
    for original, away in moved:
        original.rename(away)
    path.mkdir()
    return moved


def _unblock_sqlite_file(path: Path, moved: list[tuple[Path, Path]]) -> None:
    shutil.rmtree(path)
    for original, away in moved:
        away.rename(original)


async def _outage_requests(client: httpx.AsyncClient, admin: Headers, key: Headers) -> list[object]:
    form = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    return [
        await client.post("/api/v1/login/access-token", data=form),
        await client.get("/api/v1/users", headers=admin),
        await client.get("/api/v1/llm-settings", headers=admin),
        await client.get("/api/v1/users/me", headers=key),
        await client.get("/api/v1/api-keys", headers=key),
        await client.get("/v1/models", headers=key),
        await client.post("/v1/chat/completions", json=chat, headers=key),
    ]


def _assert_unavailable(responses: list[object], secret: str | None = None) -> None:
    for response in responses:
        assert isinstance(response, httpx.Response)
        where = f"{response.request.method} {response.request.url.path}"
        assert response.status_code == 503, (where, response.text)
        body = response.json()
        if response.request.url.path.startswith("/v1/"):
            error = body["error"]
            assert error["type"] == "server_error", where
            assert error["code"] == "database_unavailable", where
            message = error["message"]
        else:
            message = body["detail"]
        assert message.startswith("database unavailable: "), (where, message)
        assert secret is None or secret not in response.text
        assert "Traceback" not in response.text


async def test_database_outage_is_503_on_every_route_and_recovers_without_restart(
    client: httpx.AsyncClient,
    database_url: str,
    admin_headers: Headers,
    make_user: UserFactory,
) -> None:
    user = await make_user()
    created = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    key = {"Authorization": f"Bearer {created.json()['key']}"}  # not cached: never used yet
    async with database_down(database_url):
        started = time.monotonic()
        responses = await _outage_requests(client, admin_headers, key)
        assert time.monotonic() - started < 10
        _assert_unavailable(responses)
        ready = await client.get("/api/v1/health/ready")
        assert ready.status_code == 503
    for response in (
        await client.get("/api/v1/users", headers=admin_headers),
        await client.get("/api/v1/users/me", headers=key),
        await client.post(
            "/api/v1/login/access-token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        ),
    ):
        assert response.status_code == 200, response.text


@pytest.fixture
async def fresh_app_on(database_url: str) -> AsyncIterator[object]:
    """Points the app at another database for one test (a fresh engine), then back."""
    original = get_settings()

    async def point_at(url: str) -> None:
        set_settings(settings_for(url, lmstudio_base_url=original.lmstudio_base_url))
        await dispose_engine()

    yield point_at
    set_settings(original)
    await dispose_engine()


async def test_unreachable_database_is_503_fast_and_names_no_password(
    client: httpx.AsyncClient,
    database_url: str,
    admin_headers: Headers,
    make_user: UserFactory,
    fresh_app_on: object,
    tmp_path: Path,
) -> None:
    user = await make_user()
    created = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    secret = "hunter2-db-password"
    if make_url(database_url).get_backend_name() == "postgresql":
        dead = f"postgresql+asyncpg://postgres:{secret}@127.0.0.1:{free_port()}/{secret}"
    else:
        blocker = tmp_path / secret
        blocker.write_text("a file where the database's folder should be")
        dead = f"sqlite+aiosqlite:///{blocker}/app.db"
    await fresh_app_on(dead)  # type: ignore[operator]
    with captured_logs() as logs:
        started = time.monotonic()
        responses = await _outage_requests(client, admin_headers, key)
        assert time.monotonic() - started < 10
    _assert_unavailable(responses, secret if "postgresql" in dead else None)
    if "postgresql" in dead:
        assert not any(f":{secret}@" in line for line in logs), logs
    assert not any("Exception in ASGI application" in line for line in logs), logs
