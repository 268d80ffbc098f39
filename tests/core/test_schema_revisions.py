"""The readiness probe's revisions, read without Alembic, are the ones Alembic reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.core.db import create_engine
from app.core.migrate import downgrade, upgrade
from app.core.schema_revisions import (
    SchemaHistoryError,
    current_revision,
    head_revision,
    known_revisions,
)
from tests.conftest import ScratchDatabases

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def test_head_and_known_revisions_are_alembics() -> None:
    script = ScriptDirectory.from_config(Config(str(ALEMBIC_INI)))
    assert head_revision() == script.get_current_head()
    assert known_revisions() == {r.revision for r in script.walk_revisions()}
    assert len(known_revisions()) >= 5


async def test_current_revision_agrees_with_alembic_at_every_step(
    scratch_databases: ScratchDatabases,
) -> None:
    engine = create_engine(await scratch_databases.new())

    async def alembics() -> str | None:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda conn: MigrationContext.configure(conn).get_current_revision()
            )

    try:
        assert await current_revision(engine) is None is await alembics()
        for step in ("0001", "0003", "head"):
            await upgrade(step, engine=engine)
            found = await current_revision(engine)
            assert found == await alembics(), step
            assert found == (head_revision() if step == "head" else step)
        await downgrade(engine=engine)  # the table stays, empty
        assert await current_revision(engine) is None is await alembics()
        async with engine.begin() as connection:
            await connection.execute(
                sa.text("INSERT INTO alembic_version (version_num) VALUES ('0001'), ('0002')")
            )
        with pytest.raises(SchemaHistoryError, match="several revisions"):
            await current_revision(engine)
    finally:
        await engine.dispose()


def _script(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text(f'"""a migration"""\nfrom alembic import op\n\n{body}\n')


def test_merges_annotations_and_helpers_are_read_without_importing(tmp_path: Path) -> None:
    _script(tmp_path, "a.py", 'revision = "a"\ndown_revision = None')
    _script(tmp_path, "b.py", 'revision: str = "b"\ndown_revision: str | None = "a"')
    _script(tmp_path, "c.py", 'revision = "c"\ndown_revision = "a"')
    _script(tmp_path, "m.py", 'revision = "m"\ndown_revision = ("b", "c")')
    _script(tmp_path, "helpers.py", "raise SystemExit('never imported')")
    assert known_revisions(tmp_path) == {"a", "b", "c", "m"}
    assert head_revision(tmp_path) == "m"


def test_two_heads_are_refused(tmp_path: Path) -> None:
    _script(tmp_path, "a.py", 'revision = "a"\ndown_revision = None')
    _script(tmp_path, "b.py", 'revision = "b"\ndown_revision = "a"')
    _script(tmp_path, "c.py", 'revision = "c"\ndown_revision = "a"')
    with pytest.raises(SchemaHistoryError, match="more than one head revision: b, c"):
        head_revision(tmp_path)


def test_no_migrations_no_head(tmp_path: Path) -> None:
    assert head_revision(tmp_path) is None
    assert known_revisions(tmp_path) == frozenset()
