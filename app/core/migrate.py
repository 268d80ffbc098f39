"""Apply or roll back the Alembic migrations on the app's engine (the `migrate` command only:
serving reads revisions through `app.core.schema_revisions`, without Alembic)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
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
