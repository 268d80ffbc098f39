"""Command line: `python -m app serve | migrate | create-admin | models | ask | settings`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from app.core.config import DEFAULT_SUPERUSER_PASSWORD, LLMProvider, get_settings
from app.core.db import dispose_engine, get_sessionmaker
from app.core.migrate import downgrade, upgrade
from app.models import LLMSettingsUpdate
from app.services.llm import (
    NO_MODELS_HINT,
    LLMConfigurationError,
    LLMError,
    close_clients,
    get_llm_service_with_overrides,
    lmstudio_service,
    redact_url,
)
from app.services.llm.settings import load_effective_settings, save_llm_settings
from app.services.users import ensure_first_superuser, first_admin_has_default_password

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="LLM backend")
console = Console(stderr=True, soft_wrap=True)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes")] = False,
    access_log: Annotated[bool, typer.Option(help="Log one line per request")] = True,
) -> None:
    """Serve the API (OpenAPI docs at /docs); SIGTERM drains (SHUTDOWN_DRAIN_SECONDS) and lets
    requests finish (SHUTDOWN_GRACE_SECONDS, counted from the signal) before exiting."""
    settings = get_settings()
    if reload:  # the reloader restarts its worker with SIGTERM: no drain for that
        os.environ["SHUTDOWN_DRAIN_SECONDS"] = "0"
    _say_where_to_go(host, port)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_level="info",
        access_log=access_log,
        # The one place that decides who the client is: uvicorn takes it from
        # X-Forwarded-For only when the peer is a proxy listed here; the app (access log,
        # login throttling) uses request.client as given.
        proxy_headers=True,
        forwarded_allow_ips=get_settings().forwarded_allow_ips,
        timeout_graceful_shutdown=max(
            settings.shutdown_grace_seconds - settings.shutdown_drain_seconds, 0
        ),
    )


def _say_where_to_go(host: str, port: int) -> None:
    settings = get_settings()
    default_login = settings.environment != "production" and _admin_has_default_password()
    for line in where_to_go(host, port, settings.first_superuser_email, default_login):
        console.print(line, markup=False, highlight=False)


def where_to_go(host: str, port: int, admin_email: str, default_login: bool) -> list[str]:
    """What `serve` prints first: the addresses to open, and the admin's login, with the
    password only when it is the default one (`default_login`)."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    lines = [f"LLM backend at {url}: admin page {url}/admin/, API docs {url}/docs"]
    if default_login:
        lines.append(
            f"Log in as {admin_email} with the default password {DEFAULT_SUPERUSER_PASSWORD} "
            "(change it on the admin page, Users, or with PATCH /api/v1/users/me/password)"
        )
    else:
        lines.append(f"Log in as {admin_email}")
    return lines


def _admin_has_default_password() -> bool:
    settings = get_settings()

    async def check() -> bool:
        try:
            async with get_sessionmaker()() as session:
                return await first_admin_has_default_password(session, settings)
        finally:
            await dispose_engine()

    try:
        return asyncio.run(asyncio.wait_for(check(), timeout=2))
    except Exception:  # no database or no tables yet: the server itself will say why
        return settings.first_superuser_password.get_secret_value() == DEFAULT_SUPERUSER_PASSWORD


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
    console.print(f"database at {revision}")


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


def _run_llm(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an LLM command; an LLMError ends it with its message and exit status 1."""

    async def run() -> None:
        try:
            await work()
        finally:
            await close_clients()
            await dispose_engine()

    try:
        asyncio.run(run())
    except LLMError as exc:
        console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None


@cli.command()
def models() -> None:
    """List the models LM Studio offers, with their state and context length."""

    async def work() -> None:
        service = await lmstudio_service()
        found = await service.list_models()
        table = Table(
            "id", "type", "state", "context", title=f"LM Studio at {redact_url(service.base_url)}"
        )
        for info in found:
            context = str(info.max_context_length or "")
            table.add_row(info.id, info.type or "", info.state or "", context)
        Console().print(table)
        if not found:
            console.print(f"no models: {NO_MODELS_HINT}")

    _run_llm(work)


@cli.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="What to ask")],
    provider: Annotated[str | None, typer.Option(help="lmstudio or openai")] = None,
    model: Annotated[str | None, typer.Option(help="Model for this call only")] = None,
    system: Annotated[str | None, typer.Option(help="System message")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on the reply's length")] = None,
) -> None:
    """Ask the configured (or given) model and stream its reply to stdout."""

    async def work() -> None:
        chosen = await get_llm_service_with_overrides(provider, model)
        console.print(f"{chosen.provider.value}/{chosen.model}", style="dim")
        async for text in chosen.service.stream_response(
            prompt, system=system, max_tokens=max_tokens
        ):
            sys.stdout.write(text)
            sys.stdout.flush()
        sys.stdout.write("\n")

    _run_llm(work)


@cli.command("settings")
def llm_settings(
    provider: Annotated[str | None, typer.Option(help="Switch to this provider")] = None,
    lmstudio_model: Annotated[str | None, typer.Option(help="Save the LM Studio model")] = None,
    openai_model: Annotated[str | None, typer.Option(help="Save the OpenAI model")] = None,
) -> None:
    """Show the effective LLM settings; with options, save them (like PATCH /llm-settings)."""

    async def work() -> None:
        changes = {
            key: value
            for key, value in (
                ("provider", provider),
                ("lmstudio_model", lmstudio_model),
                ("openai_model", openai_model),
            )
            if value is not None
        }
        if changes:
            try:
                update = LLMSettingsUpdate.model_validate(changes)
            except ValidationError as exc:
                raise LLMConfigurationError(_first_error(exc)) from None
            async with get_sessionmaker()() as session:
                effective = await save_llm_settings(session, update, user_id=None)
        else:
            effective = await load_effective_settings()
        table = Table("setting", "value", title=f"LLM settings ({effective.source})")
        table.add_row("provider", effective.provider.value)
        for name in LLMProvider:
            table.add_row(f"{name.value}_model", effective.model_for(name) or "")
        Console().print(table)

    _run_llm(work)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    return f"{field}: {error['msg']}"


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
