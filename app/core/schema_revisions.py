"""Which schema revision the code knows and which one the database is at, without Alembic.

The readiness probe asks this on every call; importing Alembic for it would keep ~15 MiB
resident in every worker (Alembic, Mako, SQLAlchemy's other dialects) for what is a file
listing and one SELECT. `app.core.migrate` (Alembic itself) applies the migrations, and the
tests check that both read the same revisions.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import get_engine

VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"
VERSION_TABLE = "alembic_version"  # Alembic's default; migrations/env.py keeps it


class SchemaHistoryError(RuntimeError):
    """The migration scripts or the version table do not describe one linear history."""


def _assigned(path: Path, name: str) -> ast.expr | None:
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return node.value
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == name
        ):
            return node.value
    return None


def _revisions(versions: Path) -> dict[str, frozenset[str]]:
    """Every script's revision and the revisions it follows (`down_revision`)."""
    found: dict[str, frozenset[str]] = {}
    for path in sorted(versions.glob("*.py")):
        revision = _assigned(path, "revision")
        if revision is None:
            continue  # not a migration script (an __init__.py, a helper)
        value = ast.literal_eval(revision)
        if not isinstance(value, str):
            raise SchemaHistoryError(f"{path.name}: revision is not a string")
        down = _assigned(path, "down_revision")
        before = ast.literal_eval(down) if down is not None else None
        if isinstance(before, str):
            before = (before,)
        found[value] = frozenset(before or ())
    return found


@cache
def known_revisions(versions: Path = VERSIONS) -> frozenset[str]:
    """Every revision the code knows (a database at another one was migrated by a newer
    release)."""
    return frozenset(_revisions(versions))


@cache
def head_revision(versions: Path = VERSIONS) -> str | None:
    """The newest revision the code knows; None when there are no migrations."""
    revisions = _revisions(versions)
    followed = frozenset().union(*revisions.values())
    heads = sorted(set(revisions) - followed)
    if len(heads) > 1:
        raise SchemaHistoryError(f"more than one head revision: {', '.join(heads)}")
    return heads[0] if heads else None


def _read_version(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    found = list(connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    if len(found) > 1:
        raise SchemaHistoryError(f"the database is at several revisions: {', '.join(found)}")
    return found[0] if found else None


async def current_revision(engine: AsyncEngine | None = None) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    async with (engine or get_engine()).connect() as connection:
        return await connection.run_sync(_read_version)
