"""Command line: `python -m app serve | migrate | create-admin`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from app.core.config import get_settings
from app.core.db import dispose_engine, get_sessionmaker
from app.core.migrate import downgrade, upgrade
from app.services.users import ensure_first_superuser

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="LLM backend")
console = Console(stderr=True)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes")] = False,
) -> None:
    """Serve the API (OpenAPI docs at /docs)."""
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_level="info",
    )


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Roll back to REVISION")] = False,
) -> None:
    """Apply the database migrations (or roll them back with --down)."""

    async def run() -> None:
        try:
            await (downgrade(revision) if down else upgrade(revision))
        finally:
            await dispose_engine()

    asyncio.run(run())
    console.print(f"database at {'base' if down and revision == 'base' else revision}")


@cli.command("create-admin")
def create_admin() -> None:
    """Create the admin from FIRST_SUPERUSER_EMAIL / FIRST_SUPERUSER_PASSWORD if absent."""

    async def run() -> bool:
        try:
            async with get_sessionmaker()() as session:
                return await ensure_first_superuser(session, get_settings())
        finally:
            await dispose_engine()

    created = asyncio.run(run())
    email = get_settings().first_superuser_email
    console.print(f"admin {email} {'created' if created else 'already exists'}")


@cli.callback()
def _load_settings() -> None:
    """Validate configuration before any command; a bad value stops with a plain message."""
    try:
        get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            console.print(f"configuration error: {field + ': ' if field else ''}{message}")
        raise typer.Exit(2) from None


def main() -> None:
    """Console-script entry point."""
    cli()
