"""The async database engine: a SQLite file by default, PostgreSQL when DATABASE_URL says so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.config import get_settings

_engine: AsyncEngine | None = None
_sessionmaker: async_sessionmaker[AsyncSession] | None = None


def create_engine(database_url: str) -> AsyncEngine:
    """Build an engine for `database_url`, creating a SQLite file's folder if needed."""
    url = make_url(database_url)
    kwargs: dict[str, Any] = {"pool_pre_ping": not url.drivername.startswith("sqlite")}
    if url.drivername.startswith("sqlite"):
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    elif url.drivername.endswith("asyncpg"):
        kwargs["connect_args"] = {"timeout": 5}  # fail fast instead of hanging a request
    engine = create_async_engine(url, **kwargs)
    if url.drivername.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside a writer; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def get_engine() -> AsyncEngine:
    """The process's engine, created from settings on first use."""
    global _engine, _sessionmaker
    if _engine is None:
        _engine = create_engine(get_settings().database_url)
        _sessionmaker = async_sessionmaker(_engine, class_=AsyncSession, expire_on_commit=False)
    return _engine


def get_sessionmaker() -> async_sessionmaker[AsyncSession]:
    """Factory for sessions bound to the process's engine."""
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker


async def get_session() -> AsyncIterator[AsyncSession]:
    """One session per request (a FastAPI dependency)."""
    async with get_sessionmaker()() as session:
        yield session


async def dispose_engine() -> None:
    """Close every pooled connection; the next use creates a fresh engine."""
    global _engine, _sessionmaker
    if _engine is not None:
        await _engine.dispose()
    _engine = None
    _sessionmaker = None
