"""Command line: `llm-backend` (or `python -m app`) serve | migrate | create-admin | models |
ask | settings | health | users | api-keys | audit.

Starting it stays cheap: the top level imports typer alone, and each command imports what it
uses (the web server, SQLAlchemy, the provider SDKs) when it runs, so `--help` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from app.cli_accounts import audit_command, keys_cli, users_cli
from app.cli_support import (
    EXIT_CODES_HELP,
    EXIT_CONFIGURATION,
    EXIT_UNREACHABLE,
    JsonFlag,
    checked_settings,
    first_error,
    parse_moment,
    print_json,
    print_rows,
    run,
    spinner,
    stderr,
)
from app.core.providers import LLMProvider

if TYPE_CHECKING:
    from app.services.llm import EffectiveLLMSettings, LLMServiceResult

# Plain help (no rich markup): rendering it with rich would import Markdown and Pygments,
# doubling the time `--help` takes.
cli = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="LLM backend: serve the API and manage it from the shell.",
    epilog=EXIT_CODES_HELP,
)
PROVIDER_NAMES = ", ".join(LLMProvider)
cli.add_typer(users_cli, name="users")
cli.add_typer(keys_cli, name="api-keys")
cli.command("audit")(audit_command)


# ── the server and the database ───────────────────────────────────────────────────────


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes")] = False,
    access_log: Annotated[bool, typer.Option(help="Log one line per request")] = True,
) -> None:
    """Serve the API (OpenAPI docs at /docs).

    SIGTERM drains (SHUTDOWN_DRAIN_SECONDS) and lets requests finish
    (SHUTDOWN_GRACE_SECONDS, counted from the signal) before exiting."""
    import os

    import uvicorn

    settings = checked_settings()
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
        ws="none",  # no WebSocket route: the websockets library would only take memory
        # The one place that decides who the client is: uvicorn takes it from
        # X-Forwarded-For only when the peer is a proxy listed here; the app (access log,
        # login throttling) uses request.client as given.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=max(
            settings.shutdown_grace_seconds - settings.shutdown_drain_seconds, 0
        ),
    )


def _say_where_to_go(host: str, port: int) -> None:
    from app.core.config import get_settings

    settings = get_settings()
    default_login = settings.environment != "production" and _admin_has_default_password()
    for line in where_to_go(host, port, settings.first_superuser_email, default_login):
        # Plain text, not the rich console: this process goes on to serve, and rich would
        # stay resident in it (~3 MiB) for these two lines.
        typer.echo(line, err=True)


def where_to_go(host: str, port: int, admin_email: str, default_login: bool) -> list[str]:
    """What `serve` prints first: the addresses to open, and the admin's login, with the
    password only when it is the default one (`default_login`)."""
    from app.core.config import DEFAULT_SUPERUSER_PASSWORD

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
    import asyncio

    from app.core.config import DEFAULT_SUPERUSER_PASSWORD, get_settings
    from app.core.db import dispose_engine, get_sessionmaker
    from app.services.users import first_admin_has_default_password

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
    """Apply the database migrations (or roll back with --down)."""

    async def work() -> None:
        from app.core.migrate import downgrade, upgrade

        await (downgrade(revision) if down else upgrade(revision))

    run(work)
    stderr().print(f"database at {revision}")


@cli.command("create-admin")
def create_admin() -> None:
    """Create the first admin if absent.

    The admin is FIRST_SUPERUSER_EMAIL with FIRST_SUPERUSER_PASSWORD."""

    async def work() -> bool:
        from app.core.db import get_sessionmaker
        from app.services.users import ensure_first_superuser

        async with get_sessionmaker()() as session:
            return await ensure_first_superuser(session, checked_settings())

    created = run(work)
    email = checked_settings().first_superuser_email
    stderr().print(f"admin {email} {'created' if created else 'already exists'}")


# ── LLM commands ──────────────────────────────────────────────────────────────────────


def _provider(value: str, option: str = "--provider") -> LLMProvider:
    """The provider named on the command line; a usage error listing the choices if none."""
    from app.services.llm import LLMConfigurationError, parse_provider

    try:
        return parse_provider(value)
    except LLMConfigurationError as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{option}'") from None


@cli.command()
def models(
    provider: Annotated[
        str | None, typer.Option(help="Provider to list (default: the active one)")
    ] = None,
    detail: Annotated[
        bool, typer.Option("--detail", help="Also publisher, quantization, structured output")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """List a provider's models.

    Each with its type, state and context length (more with --detail)."""
    chosen_provider = _provider(provider) if provider is not None else None

    async def work() -> None:
        from dataclasses import asdict

        from app.services.llm import PROVIDERS, discovery_service, load_effective_settings

        chosen = chosen_provider or (await load_effective_settings()).provider
        service = discovery_service(chosen)
        found = await service.list_models()
        if json_output:
            print_json(
                {
                    "provider": chosen.value,
                    "upstream": service.upstream,
                    "models": [asdict(info) for info in found],
                }
            )
            return
        columns = ["id", "type", "state", "context"]
        extra = ["publisher", "quantization", "structured output"] if detail else []
        rows = [
            [info.id, info.type, info.state, info.max_context_length]
            + ([info.publisher, info.quantization, info.structured_output] if detail else [])
            for info in found
        ]
        title = f"{PROVIDERS[chosen].display_name} at {service.upstream}"
        print_rows(columns + extra, rows, title=title)
        if not found:
            stderr().print(f"{PROVIDERS[chosen].display_name} lists no models")

    run(work)


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(
            f"{path} is not a JSON file: {exc}", param_hint="'--schema'"
        ) from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{path} must hold a JSON object", param_hint="'--schema'")
    return value


@cli.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="What to ask")],
    provider: Annotated[
        str | None, typer.Option(help="Provider for this call only (default: the active one)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for this call only")] = None,
    system: Annotated[str | None, typer.Option(help="System message")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Cap on the reply's length")] = None,
    schema: Annotated[
        Path | None,
        typer.Option(
            help="A JSON Schema file: print the reply as JSON validated against it",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Ask a model; its reply streams to stdout.

    The active provider and model answer unless --provider / --model say otherwise. With
    --schema the reply is JSON validated against that JSON Schema."""
    schema_value = _read_schema(schema) if schema is not None else None
    chosen_provider = _provider(provider) if provider is not None else None

    async def work() -> None:
        from app.services.llm import (
            UnsafeSchemaError,
            get_llm_service_with_overrides,
            guard_schema_off_loop,
        )

        guarded = None
        if schema_value is not None:
            try:
                guarded = await guard_schema_off_loop(schema_value)
            except UnsafeSchemaError as exc:
                raise typer.BadParameter(str(exc), param_hint="'--schema'") from None
        chosen = await get_llm_service_with_overrides(chosen_provider, model)
        stderr().print(f"{chosen.provider.value}/{chosen.model}", style="dim")
        if guarded is None:
            await _stream_answer(chosen, prompt, system, max_tokens, json_output)
            return
        from app.services.llm import generate_structured_json

        with spinner(f"waiting for {chosen.model}…"):
            result = await generate_structured_json(
                chosen.service, prompt, guarded, system=system, max_tokens=max_tokens
            )
        if not json_output:
            print_json(result.value)
            return
        print_json(
            {
                "data": result.value,
                "provider": result.provider or chosen.provider.value,
                "model": result.model or chosen.model,
                "attempts": result.attempts,
                "mode": str(result.mode),
            }
        )

    run(work)


async def _stream_answer(
    chosen: LLMServiceResult,
    prompt: str,
    system: str | None,
    max_tokens: int | None,
    json_output: bool,
) -> None:
    """Print the reply as it arrives (a spinner until its first token), or with --json the
    whole reply and what it cost once it is complete."""
    from app.services.llm import StreamChunk, build_messages

    pieces: list[str] = []
    last: StreamChunk | None = None
    printed = False
    try:
        with spinner(f"waiting for {chosen.model}…") as stop_spinner:
            chunks = chosen.service.stream_chunks(
                build_messages(prompt, system), max_tokens=max_tokens
            )
            async for chunk in chunks:
                if chunk.text and json_output:
                    pieces.append(chunk.text)
                elif chunk.text:
                    stop_spinner()
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
                    printed = True
                if chunk.finish_reason is not None:
                    last = chunk
    finally:
        if printed:  # a broken stream's error then starts on a line of its own
            sys.stdout.write("\n")
            sys.stdout.flush()
    if json_output:
        usage = last.usage if last is not None else None
        print_json(
            {
                "text": "".join(pieces),
                "provider": (last.provider if last else "") or chosen.provider.value,
                "model": (last.model if last else "") or chosen.model,
                "finish_reason": last.finish_reason if last else None,
                "usage": {
                    "prompt_tokens": usage.prompt_tokens if usage else 0,
                    "completion_tokens": usage.completion_tokens if usage else 0,
                },
            }
        )
        return
    if not printed:
        sys.stdout.write("\n")
    if last is not None and last.finish_reason == "length":
        stderr().print("(the reply was cut: it reached the token limit)", style="dim")


@cli.command("settings")
def llm_settings(
    provider: Annotated[
        str | None, typer.Option(help=f"Switch to this provider: {PROVIDER_NAMES}")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PROVIDER=NAME",
            help="Save a provider's model (repeatable), e.g. --model ollama=llama3.2",
        ),
    ] = None,
    fallback: Annotated[
        str | None,
        typer.Option(
            metavar="NAME[,NAME]",
            help="Save the fallback chain, in order ('' empties it: LLM_FALLBACK_PROVIDERS "
            "then applies)",
        ),
    ] = None,
    allow_cloud: Annotated[
        str | None,
        typer.Option(
            metavar="NAME[,NAME]",
            help="With --fallback: the cloud providers a local one may fall back to "
            "(prompts then leave this machine)",
        ),
    ] = None,
    lmstudio_model: Annotated[str | None, typer.Option(help="Save the LM Studio model")] = None,
    openai_model: Annotated[str | None, typer.Option(help="Save the OpenAI model")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Show the LLM settings, or save them.

    Without options, the effective settings; with options, saves them (like PATCH
    /api/v1/llm-settings). Warnings (a model its provider does not offer, a fallback that
    will be skipped) go to stderr."""
    changes = _settings_changes(
        provider, model or [], fallback, allow_cloud, lmstudio_model, openai_model
    )

    async def work() -> None:
        from pydantic import ValidationError

        from app.core.db import get_sessionmaker
        from app.models import LLMSettingsUpdate
        from app.services.llm import (
            LLMConfigurationError,
            load_effective_settings,
            model_name_warnings,
            save_llm_settings,
        )

        warnings: list[str] = []
        if changes:
            try:
                update = LLMSettingsUpdate.model_validate(changes)
            except ValidationError as exc:
                raise LLMConfigurationError(first_error(exc)) from None
            async with get_sessionmaker()() as session:
                saved = await save_llm_settings(session, update, user_id=None)
            # Checked after the save, which never waits on them (as PATCH does).
            named = {
                _provider(key.removesuffix("_model")): value
                for key, value in changes.items()
                if key.endswith("_model") and isinstance(value, str)
            }
            effective = saved.effective
            warnings = saved.warnings + await model_name_warnings(named)
        else:
            effective = await load_effective_settings()
        _print_settings(effective, json_output)
        for warning in warnings:
            stderr().print(f"warning: {warning}")

    run(work)


def _settings_changes(
    provider: str | None,
    models: list[str],
    fallback: str | None,
    allow_cloud: str | None,
    lmstudio_model: str | None,
    openai_model: str | None,
) -> dict[str, object]:
    """The PATCH body the `settings` options describe; a usage error for a bad one."""
    changes: dict[str, object] = {
        key: value
        for key, value in (
            ("lmstudio_model", lmstudio_model),
            ("openai_model", openai_model),
        )
        if value is not None
    }
    if provider is not None:
        changes["provider"] = _provider(provider).value
    for item in models:
        name, equals, value = item.partition("=")
        if not equals:
            raise typer.BadParameter(f"takes PROVIDER=NAME, not '{item}'", param_hint="'--model'")
        changes[f"{_provider(name, '--model').value}_model"] = value
    if allow_cloud is not None and fallback is None:
        raise typer.BadParameter("goes with --fallback", param_hint="'--allow-cloud'")
    if fallback is not None:
        cloud = {_provider(name, "--allow-cloud") for name in _names(allow_cloud or "")}
        chain = [_provider(name, "--fallback") for name in _names(fallback)]
        changes["fallback_providers"] = [
            {"provider": name.value, "allow_cloud": name in cloud} for name in chain
        ]
    return changes


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _print_settings(effective: EffectiveLLMSettings, json_output: bool) -> None:
    if json_output:
        print_json(
            {
                "source": effective.source,
                "provider": effective.provider.value,
                "models": {name.value: model for name, model in effective.models.items()},
                "embedding_models": {
                    name.value: model for name, model in effective.embedding_models.items()
                },
                "fallbacks": [
                    {"provider": entry.provider.value, "allow_cloud": entry.allow_cloud}
                    for entry in effective.fallbacks
                ],
            }
        )
        return
    rows: list[list[object]] = [["provider", effective.provider.value]]
    rows += [[f"{name.value}_model", model] for name, model in effective.models.items()]
    rows += [
        [f"{name.value}_embedding_model", model]
        for name, model in effective.embedding_models.items()
    ]
    chain = [
        entry.provider.value + (" (cloud allowed)" if entry.allow_cloud else "")
        for entry in effective.fallbacks
    ]
    rows.append(["fallback_providers", ", ".join(chain)])
    print_rows(["setting", "value"], rows, title=f"LLM settings ({effective.source})")


@cli.command()
def health(json_output: JsonFlag = False) -> None:
    """Each LLM provider's state.

    Whether it is configured and reachable, how long listing its models took, how many it
    lists. Exits 3 when the active provider is not configured, 4 when it did not answer."""

    async def work() -> int:
        from dataclasses import asdict

        from app.services.llm import check_providers, load_effective_settings

        found = await check_providers(checked_settings(), await load_effective_settings())
        if json_output:
            print_json(
                {"providers": [asdict(item) | {"provider": item.provider.value} for item in found]}
            )
        else:
            columns = ["provider", "active", "configured", "reachable", "latency ms", "models"]
            columns += ["model", "address", "error"]
            rows = [
                [
                    item.provider.value,
                    item.active,
                    item.configured,
                    item.reachable,
                    item.latency_ms,
                    item.model_count,
                    item.model,
                    item.base_url,
                    item.error,
                ]
                for item in found
            ]
            print_rows(columns, rows, title="LLM providers")
        active = next((item for item in found if item.active), None)
        if active is None or not active.configured:
            return EXIT_CONFIGURATION
        return 0 if active.reachable else EXIT_UNREACHABLE

    exit_code = run(work)
    if exit_code:
        raise typer.Exit(exit_code)


UsageGroupOption = Literal["day", "user", "api_key", "provider", "model"]


@cli.command()
def usage(
    group_by: Annotated[
        UsageGroupOption, typer.Option("--group-by", help="Group the calls by this")
    ] = "day",
    since: Annotated[
        str | None,
        typer.Option(help="From this date or time (UTC unless given; default 30 days ago)"),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this date or time (default now)")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """LLM usage of every user from the ledger.

    Requests, tokens, errors and cost per group, with totals (at most 366 days)."""
    start, end = parse_moment(since, "--since"), parse_moment(until, "--until")

    async def work() -> None:
        from app.core.db import get_sessionmaker
        from app.services.usage_reports import BadRange, report_range, usage_report

        try:
            start_utc, end_utc = report_range(start, end)
        except BadRange as exc:
            raise typer.BadParameter(str(exc), param_hint="'--since'/'--until'") from None
        async with get_sessionmaker()() as session:
            report = await usage_report(session, group_by, start_utc, end_utc)
        if json_output:
            print_json(report.model_dump(mode="json"))
            return
        columns = [group_by, "requests", "prompt tokens", "completion tokens", "errors", "cost"]
        rows: list[list[object]] = [
            [g.key, g.requests, g.prompt_tokens, g.completion_tokens, g.errors, g.cost]
            for g in report.groups
        ]
        t = report.totals
        rows.append(["total", t.requests, t.prompt_tokens, t.completion_tokens, t.errors, t.cost])
        title = f"LLM usage {start_utc:%Y-%m-%d %H:%M} to {end_utc:%Y-%m-%d %H:%M} UTC"
        print_rows(columns, rows, title=title)

    run(work)


def main() -> None:
    """Console-script entry point (`llm-backend`, and `python -m app`)."""
    cli()
