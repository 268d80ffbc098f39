"""The async database engine: a SQLite file by default, PostgreSQL when DATABASE_URL says so."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.config import get_settings
from app.core.loop_shutdown import close_at_loop_shutdown

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.dialects.postgresql import Insert as PostgreSQLInsert
    from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert

logger = logging.getLogger("app.core.db")

_engine: AsyncEngine | None = None
_sessionmaker: async_sessionmaker[AsyncSession] | None = None

CONNECT_TIMEOUT = 5  # seconds: a dead database fails a request fast instead of hanging it


class DatabaseUnavailableError(Exception):
    """No connection to the database could be opened; `reason` says why, without secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def create_engine(database_url: str, *, pre_ping: bool = True) -> AsyncEngine:
    """Build an engine for `database_url`, creating a SQLite file's folder if needed.

    Statement parameters never appear in an error's text or a log line (they hold password
    and API-key hashes); a failure to connect raises DatabaseUnavailableError. Without
    `pre_ping`, a pooled connection is not checked before use (the caller retries a call
    whose connection turned out dead).
    """
    url = make_url(database_url)
    kwargs: dict[str, Any] = {
        "pool_pre_ping": pre_ping and not url.drivername.startswith("sqlite"),
        "hide_parameters": True,
    }
    if url.drivername.startswith("sqlite"):
        if url.database and url.database != ":memory:":
            # Best effort: if it cannot be made, connecting fails and says so (503).
            with contextlib.suppress(OSError):
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    elif url.drivername.endswith("asyncpg"):
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT}
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "do_connect", _connect)
    if url.drivername.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as exc:
        raise DatabaseUnavailableError(_connect_failure(exc)) from exc


def _connect_failure(exc: Exception) -> str:
    # Messages from the server or the OS name the database, host or user, never a password.
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT} s"
    if isinstance(exc, OSError):
        return f"cannot connect ({exc.strerror or type(exc).__name__})"
    if isinstance(exc, sqlite3.Error) or _is_postgres_error(exc):
        return _first_line(exc)
    return f"cannot connect ({type(exc).__name__})"


def _is_postgres_error(exc: Exception) -> bool:
    # asyncpg is imported by SQLAlchemy's PostgreSQL driver when a URL needs it; a worker on
    # SQLite never loads it (~3 MiB), and then no error can be one of its.
    asyncpg = sys.modules.get("asyncpg")
    return asyncpg is not None and isinstance(exc, asyncpg.PostgresError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


# Errors meaning "the database cannot serve now" rather than "this statement is wrong".
# SQLite primary result codes: PERM, BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN,
# NOTADB. PostgreSQL SQLSTATE classes: connection exception, insufficient resources,
# operator intervention (shutdown, terminated backend).
_SQLITE_UNAVAILABLE = {3, 5, 6, 8, 10, 11, 13, 14, 26}
_POSTGRES_UNAVAILABLE = ("08", "53", "57P")


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database cannot serve now, if that is what `exc` means; None for other errors.

    The reason is safe to show a caller: no statement parameters, no DSN password.
    """
    if isinstance(exc, DatabaseUnavailableError):
        return exc.reason
    if isinstance(exc, PoolTimeoutError):
        return "every connection is busy (pool timeout)"
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return "connection lost"
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        if (getattr(orig, "sqlite_errorcode", None) or 0) & 0xFF in _SQLITE_UNAVAILABLE:
            return _first_line(orig)
        if str(orig).startswith("no such table"):
            return f"{_first_line(orig)}: run `python -m app migrate`"
        return None
    sqlstate = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    if sqlstate.startswith(_POSTGRES_UNAVAILABLE):
        return f"connection failed (SQLSTATE {sqlstate})"
    if sqlstate == "42P01":  # undefined_table
        return "tables missing: run `python -m app migrate`"
    return None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside a writer; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def upsert_insert(dialect: str) -> Callable[[Table], PostgreSQLInsert | SQLiteInsert]:
    """`insert` of the dialect named `dialect` (one with ON CONFLICT: PostgreSQL or SQLite).

    Imported on first use: a worker on SQLite never loads PostgreSQL's dialect (~6 MiB).
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def get_engine() -> AsyncEngine:
    """The process's engine, created from settings on first use.

    Created inside a running event loop, it is disposed when that loop shuts down (its
    connections belong to it), unless `dispose_engine` came first; the next use after that
    creates a fresh one.
    """
    global _engine, _sessionmaker
    if _engine is None:
        engine = _engine = create_engine(get_settings().database_url)
        _sessionmaker = async_sessionmaker(_engine, class_=AsyncSession, expire_on_commit=False)

        async def dispose_if_current() -> None:
            if _engine is engine:
                await dispose_engine()

        with contextlib.suppress(RuntimeError):  # no running loop: nothing to tie it to
            close_at_loop_shutdown("database-engine", dispose_if_current)
    return _engine


def get_sessionmaker() -> async_sessionmaker[AsyncSession]:
    """Factory for sessions bound to the process's engine."""
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker


async def get_session() -> AsyncIterator[AsyncSession]:
    """One session per request (a FastAPI dependency).

    Closing it rolls back on its connection; when the database dropped that connection
    (a restart, `pg_terminate_backend`) the rollback fails after the answer may have been
    sent, so the connection is discarded quietly instead of failing a finished request.
    """
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        try:
            await session.close()
        except SQLAlchemyError as exc:
            logger.warning(
                "database connection lost at the end of a request: %s",
                unavailable_reason(exc) or type(exc).__name__,
            )
            with contextlib.suppress(SQLAlchemyError):
                await session.invalidate()


async def dispose_engine() -> None:
    """Close every pooled connection; the next use creates a fresh engine."""
    global _engine, _sessionmaker
    if _engine is not None:
        await _engine.dispose()
    _engine = None
    _sessionmaker = None
