"""What every CLI command shares: exit codes, running async work with failures turned into
a message and an exit code, and printing data (a table, tab-separated lines, or JSON).

Only typer and the standard library are imported up front; the rest when a command runs.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from rich.console import Console

    from app.core.config import Settings

T = TypeVar("T")
ModelT = TypeVar("ModelT", bound="BaseModel")

EXIT_FAILURE = 1
EXIT_USAGE = 2  # what typer itself exits with on a bad option or argument
EXIT_CONFIGURATION = 3
EXIT_UNREACHABLE = 4
EXIT_UPSTREAM = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""Exit codes:

\b
  0  success
  {EXIT_FAILURE}  any other failure (e.g. no such user)
  {EXIT_USAGE}  usage error: a bad option or argument
  {EXIT_CONFIGURATION}  configuration error: an invalid setting, no model configured, missing
     credentials, a database not migrated
  {EXIT_UNREACHABLE}  an LLM upstream or the database could not be reached (connection
     refused, timeout)
  {EXIT_UPSTREAM}  an LLM upstream answered with an error (an HTTP error status, an invalid
     reply, no model loaded)
"""

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (stable keys) instead of text")]


class CommandError(Exception):
    """A failure to report in one line and end the command with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@cache
def stderr() -> Console:
    """The console for everything but data: progress, confirmations, errors. Messages are
    printed as they are (no markup: upstream text may hold brackets)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False, markup=False)


def checked_settings() -> Settings:
    """The validated configuration; a bad value stops the command with a plain message."""
    from pydantic import ValidationError

    from app.core.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            stderr().print(f"configuration error: {field + ': ' if field else ''}{message}")
        raise typer.Exit(EXIT_CONFIGURATION) from None


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's async work after checking the configuration; a failure ends it with
    a one-line message and the exit code that says what kind of failure it was."""
    import asyncio

    checked_settings()

    async def run_and_close() -> T:
        try:
            return await work()
        finally:
            await _close_connections()

    try:
        return asyncio.run(run_and_close())
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except KeyboardInterrupt:
        stderr().print()
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        failure = _failure(exc)
        if failure is None:
            raise
        exit_code, message = failure
        from rich.text import Text

        stderr().print(Text.assemble(("error:", "red"), " ", message))
        raise typer.Exit(exit_code) from None


async def _close_connections() -> None:
    # Only what this command imported can hold connections.
    if "app.services.llm" in sys.modules:
        from app.services.llm import close_clients

        await close_clients()
    if "app.services.usage_ledger" in sys.modules:  # the usage rows of its LLM calls
        from app.services.usage_ledger import usage_writer

        await usage_writer.stop()
    if "app.core.db" in sys.modules:
        from app.core.db import dispose_engine

        await dispose_engine()


def _failure(exc: Exception) -> tuple[int, str] | None:
    """The exit code and message for a failure the user can act on; None for a bug."""
    if isinstance(exc, CommandError):
        return exc.exit_code, exc.message
    if "app.services.llm" in sys.modules:  # otherwise nothing raised could be an LLMError
        from app.services.llm import LLMError, LLMSettingsUnavailableError

        if isinstance(exc, LLMSettingsUnavailableError) and isinstance(exc.__cause__, Exception):
            database = _database_failure(exc.__cause__)
            if database is not None:
                return database
        if isinstance(exc, LLMError):
            return _llm_exit_code(exc), exc.message
    if "app.core.db" in sys.modules:
        return _database_failure(exc)
    return None


def _llm_exit_code(exc: Exception) -> int:
    from app.services.llm import (
        LLMConfigurationError,
        LLMConnectionError,
        LLMInvalidRequestError,
        LLMModelNotFoundError,
        LLMNoModelsError,
        LLMOverloadedError,
        LLMSettingsUnavailableError,
        LLMTimeoutError,
        LLMUpstreamError,
        LLMValidationError,
    )

    if isinstance(exc, LLMConfigurationError):
        return EXIT_CONFIGURATION
    if isinstance(exc, LLMConnectionError | LLMTimeoutError | LLMSettingsUnavailableError):
        return EXIT_UNREACHABLE
    if isinstance(exc, LLMInvalidRequestError):
        return EXIT_USAGE
    upstream_errors = (
        LLMUpstreamError,
        LLMNoModelsError,
        LLMModelNotFoundError,
        LLMValidationError,
        LLMOverloadedError,
    )
    if isinstance(exc, upstream_errors):
        return EXIT_UPSTREAM
    return EXIT_FAILURE


def _database_failure(exc: Exception) -> tuple[int, str] | None:
    from app.core.db import unavailable_reason

    reason = unavailable_reason(exc)
    if reason is None:
        return None
    # A schema that is missing will not appear by trying again: that is configuration.
    unmigrated = "python -m app migrate" in reason
    return (EXIT_CONFIGURATION if unmigrated else EXIT_UNREACHABLE), f"database: {reason}"


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def print_json(value: Any) -> None:
    """`value` as one JSON document on stdout (datetimes in ISO 8601, UUIDs as strings)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=_json_default))
    sys.stdout.write("\n")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def print_rows(
    columns: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None
) -> None:
    """A rich table on a terminal; tab-separated lines (a header first) when piped."""
    cells = [[_cell(value) for value in row] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(*columns, title=title)
        for row in cells:
            table.add_row(*(Text(value) for value in row))  # no markup in upstream data
        Console().print(table)
        return
    for row in [list(columns), *cells]:
        plain = (" ".join(value.split()) for value in row)  # no tab or newline inside a field
        sys.stdout.write("\t".join(plain) + "\n")
    sys.stdout.flush()


@contextmanager
def spinner(message: str) -> Iterator[Callable[[], None]]:
    """A spinner on stderr (a terminal only) while the block runs; yields a function that
    stops it early. It leaves nothing behind on the screen."""
    from rich.live import Live
    from rich.spinner import Spinner

    live = Live(
        Spinner("dots", text=message, style="cyan"),
        console=stderr(),
        transient=True,
        refresh_per_second=12.5,
        redirect_stdout=False,  # stdout carries the answer: never routed through the spinner
        redirect_stderr=False,
    )
    live.start()
    try:
        yield live.stop
    finally:
        live.stop()


def first_error(exc: ValidationError) -> str:
    """The first field a validation refused, and why: `password: String should have ...`."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    return f"{field}: {error['msg']}"


def validated(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """`model` built from `values`; a usage error naming the first invalid field."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise typer.BadParameter(first_error(exc)) from None


def parse_moment(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time given to `option` (None stays None); a usage error otherwise."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            "expected an ISO 8601 date or time, e.g. 2026-11-30 or 2026-11-30T12:00:00Z",
            param_hint=f"'{option}'",
        ) from None


_DURATION = re.compile(r"(\d{1,6})([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(value: str | None, option: str, *, now: datetime | None = None) -> datetime | None:
    """When something given as `option` ends: a duration from now (`12h`, `30d`, `8w`) or an
    ISO 8601 date or time (UTC unless it names a zone). Whether that is acceptable (in the
    future, not too far) is for the model the value goes into."""
    if value is None:
        return None
    duration = _DURATION.fullmatch(value.strip().lower())
    if duration is None:
        moment = parse_moment(value.strip(), option)
        assert moment is not None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    amount, unit = duration.groups()
    try:
        return (now or datetime.now(UTC)) + timedelta(**{_UNITS[unit]: int(amount)})
    except OverflowError:
        raise typer.BadParameter("too far ahead", param_hint=f"'{option}'") from None
