"""Migrations go from empty to head and back, on both backends."""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import create_engine
from app.core.migrate import downgrade, upgrade
from app.core.schema_revisions import current_revision, head_revision
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


async def test_0005_adds_the_provider_columns_to_an_existing_row(
    scratch_databases: ScratchDatabases,
) -> None:
    url = await scratch_databases.new()
    engine = create_engine(url)
    row = (
        "SELECT openrouter_model, ollama_model, bedrock_model, fallback_providers FROM llmsettings"
    )
    try:
        await upgrade("0004", engine=engine)
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO llmsettings (id, provider, lmstudio_model, version, updated_at) "
                    "VALUES (1, 'lmstudio', 'kept-model', 3, CURRENT_TIMESTAMP)"
                )
            )
        await upgrade("0005", engine=engine)
        async with engine.connect() as conn:
            openrouter, ollama, bedrock, fallbacks = (await conn.execute(sa.text(row))).one()
            kept = (await conn.execute(sa.text("SELECT lmstudio_model FROM llmsettings"))).one()
        assert (openrouter, ollama, bedrock) == (None, None, None)
        # SQLite hands JSON back as its text; PostgreSQL decodes it.
        assert fallbacks in ([], "[]")
        assert kept == ("kept-model",)
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE llmsettings SET ollama_model = :m"), {"m": "x" * 200}
            )

        await downgrade("0004", engine=engine)
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in sa.inspect(c).get_columns("llmsettings")}
            )
            kept = (await conn.execute(sa.text("SELECT lmstudio_model FROM llmsettings"))).one()
        assert columns.isdisjoint({"openrouter_model", "ollama_model", "fallback_providers"})
        assert kept == ("kept-model",)
    finally:
        await engine.dispose()


async def test_0009_adds_the_embedding_model_columns_to_an_existing_row(
    scratch_databases: ScratchDatabases,
) -> None:
    url = await scratch_databases.new()
    engine = create_engine(url)
    columns = [f"{p}_embedding_model" for p in ("lmstudio", "openai", "openrouter", "ollama")]
    columns.append("bedrock_embedding_model")
    try:
        await upgrade("0007", engine=engine)
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO llmsettings (id, provider, lmstudio_model, version, updated_at) "
                    "VALUES (1, 'lmstudio', 'kept-model', 3, CURRENT_TIMESTAMP)"
                )
            )
        await upgrade("0009", engine=engine)
        async with engine.begin() as conn:
            row = sa.table("llmsettings", *(sa.column(name) for name in columns))
            saved = await conn.execute(sa.select(*row.c))
            assert saved.one() == (None,) * 5
            await conn.execute(
                sa.text("UPDATE llmsettings SET bedrock_embedding_model = :m"), {"m": "x" * 200}
            )

        await downgrade("0007", engine=engine)
        async with engine.connect() as conn:
            left = await conn.run_sync(
                lambda c: {col["name"] for col in sa.inspect(c).get_columns("llmsettings")}
            )
            kept = (await conn.execute(sa.text("SELECT lmstudio_model FROM llmsettings"))).one()
        assert left.isdisjoint(columns)
        assert kept == ("kept-model",)
    finally:
        await engine.dispose()
