"""Migrations go from empty to head and back, on both backends."""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import create_engine
from app.core.migrate import current_revision, downgrade, head_revision, upgrade
from tests.conftest import ScratchDatabases


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_to_head_and_downgrade_to_empty(scratch_databases: ScratchDatabases) -> None:
    url = await scratch_databases.new()
    engine = create_engine(url)
    try:
        assert await current_revision(engine) is None
        await upgrade(engine=engine)
        assert await current_revision(engine) == head_revision()
        assert {"user", "apikey"} <= await _tables(url)

        await downgrade(engine=engine)
        assert await current_revision(engine) is None
        assert await _tables(url) <= {"alembic_version"}

        await upgrade(engine=engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
