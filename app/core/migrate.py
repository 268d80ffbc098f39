"""Apply or roll back the Alembic migrations on the app's engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import get_engine

_ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def _config(connection: Connection) -> Config:
    config = Config(str(_ALEMBIC_INI))
    config.attributes["connection"] = connection
    return config


async def upgrade(revision: str = "head", engine: AsyncEngine | None = None) -> None:
    """Migrate the database up to `revision` (default: the newest)."""
    async with (engine or get_engine()).begin() as connection:
        await connection.run_sync(lambda conn: command.upgrade(_config(conn), revision))


async def downgrade(revision: str = "base", engine: AsyncEngine | None = None) -> None:
    """Migrate the database down to `revision` (default: empty)."""
    async with (engine or get_engine()).begin() as connection:
        await connection.run_sync(lambda conn: command.downgrade(_config(conn), revision))


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(Config(str(_ALEMBIC_INI))).get_current_head()


def known_revisions() -> frozenset[str]:
    """Every revision the code knows (a database at another one was migrated by a newer
    release)."""
    script = ScriptDirectory.from_config(Config(str(_ALEMBIC_INI)))
    return frozenset(revision.revision for revision in script.walk_revisions())


async def current_revision(engine: AsyncEngine | None = None) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    async with (engine or get_engine()).connect() as connection:
        return await connection.run_sync(
            lambda conn: MigrationContext.configure(conn).get_current_revision()
        )
