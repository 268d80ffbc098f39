"""`users` and `api-keys`: the accounts an operator manages from the shell, through the
same services as the API (never SQL of its own)."""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli_support import (
    CommandError,
    JsonFlag,
    parse_expiry,
    print_json,
    print_rows,
    run,
    stderr,
    validated,
)

if TYPE_CHECKING:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from app.models import ApiKey, User

users_cli = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Manage users.")
keys_cli = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Manage a user's API keys."
)


async def _session_user(session: AsyncSession, email: str) -> User:
    from app.services.users import get_user_by_email

    user = await get_user_by_email(session, email)
    if user is None:
        raise CommandError(f"no user with the email {email}")
    return user


def _user_fields(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "full_name": user.full_name,
        "is_active": user.is_active,
        "is_superuser": user.is_superuser,
        "created_at": user.created_at,
    }


def _print_user(user: User, json_output: bool, message: str) -> None:
    if json_output:
        print_json({"user": _user_fields(user)})
    stderr().print(message)


PasswordOption = Annotated[
    str | None,
    typer.Option(
        help="The password; asked for (hidden) when omitted, which keeps it out of the "
        "shell history and the process list"
    ),
]


def _password(given: str | None) -> str:
    if given is not None:
        return given
    # Asked on stderr: stdout stays clean for --json.
    answer: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return answer


@users_cli.command("list")
def users_list(json_output: JsonFlag = False) -> None:
    """List every user, oldest first."""

    async def work() -> list[User]:
        from app.core.db import get_sessionmaker
        from app.services.users import list_users

        found: list[User] = []
        async with get_sessionmaker()() as session:
            while True:
                page, _total = await list_users(session, skip=len(found), limit=500)
                found += page
                if len(page) < 500:
                    return found

    found = run(work)
    if json_output:
        print_json({"users": [_user_fields(user) for user in found]})
        return
    rows = [[u.email, u.full_name, u.is_active, u.is_superuser, u.created_at, u.id] for u in found]
    print_rows(["email", "name", "active", "admin", "created", "id"], rows, title="Users")


@users_cli.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="Their email, also their login")],
    password: PasswordOption = None,
    full_name: Annotated[str | None, typer.Option(help="Their name")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make them an administrator")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Create a user."""
    from app.models import UserCreate

    user_in = validated(
        UserCreate,
        {
            "email": email,
            "password": _password(password),
            "full_name": full_name,
            "is_superuser": admin,
        },
    )

    async def work() -> User:
        from sqlalchemy.exc import IntegrityError

        from app.core.db import get_sessionmaker
        from app.services.users import create_user, get_user_by_email

        taken = CommandError(f"a user with the email {user_in.email} already exists")
        async with get_sessionmaker()() as session:
            if await get_user_by_email(session, user_in.email) is not None:
                raise taken
            try:
                return await create_user(session, user_in)
            except IntegrityError:  # created by someone else meanwhile
                raise taken from None

    user = run(work)
    _print_user(user, json_output, f"user {user.email} created")


@users_cli.command("deactivate")
def users_deactivate(
    email: Annotated[str, typer.Argument(help="Whose account")],
    json_output: JsonFlag = False,
) -> None:
    """Deactivate a user.

    Their sessions end and their API keys are revoked for good."""

    async def work() -> tuple[User, bool]:
        from app.core.db import get_sessionmaker
        from app.models import AuditAction, UserUpdate
        from app.services.users import update_user

        async with get_sessionmaker()() as session:
            user = await _session_user(session, email)
            if not user.is_active:
                return user, False
            action = AuditAction.USER_DEACTIVATE
            return await update_user(
                session, user, UserUpdate(is_active=False), action=action
            ), True

    user, changed = run(work)
    message = "deactivated; their API keys are revoked" if changed else "was already inactive"
    _print_user(user, json_output, f"user {user.email} {message}")


@users_cli.command("reset-password")
def users_reset_password(
    email: Annotated[str, typer.Argument(help="Whose password")],
    password: PasswordOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Set a user's password.

    Their sessions end; their API keys keep working."""
    from app.models import UserUpdate

    user_in = validated(UserUpdate, {"password": _password(password)})

    async def work() -> User:
        from app.core.db import get_sessionmaker
        from app.services.users import update_user

        async with get_sessionmaker()() as session:
            return await update_user(session, await _session_user(session, email), user_in)

    user = run(work)
    _print_user(user, json_output, f"password of {user.email} reset; their sessions are ended")


def _key_fields(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
        "expires_at": row.expires_at,
        "last_used_at": row.last_used_at,
    }


@keys_cli.command("create")
def keys_create(
    email: Annotated[str, typer.Argument(help="Whose key (the key acts as them)")],
    name: Annotated[str, typer.Option(help="What the key is for")],
    expires: Annotated[
        str | None,
        typer.Option(
            help="When the key stops working: a duration from now (12h, 30d, 8w) or an ISO "
            "8601 date or time (UTC unless it names a zone); at most 5 years ahead. "
            "Default: never"
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Issue an API key and print it.

    It is shown this once: only its hash is stored."""
    from app.models import ApiKeyCreate

    expires_at = parse_expiry(expires, "--expires")
    key_in = validated(ApiKeyCreate, {"name": name, "expires_at": expires_at})

    async def work() -> tuple[str, ApiKey, str]:
        from app.core.db import get_sessionmaker
        from app.services.api_keys import issue_api_key

        async with get_sessionmaker()() as session:
            user = await _session_user(session, email)
            if not user.is_active:
                raise CommandError(f"user {user.email} is inactive: a key would not work")
            row, key = await issue_api_key(session, user, key_in)
            return user.email, row, key

    owner, row, key = run(work)
    if json_output:
        print_json({"user": owner, "api_key": _key_fields(row) | {"key": key}})
    else:
        sys.stdout.write(key + "\n")
    until = (
        f"expires {row.expires_at.isoformat(timespec='seconds')}"
        if row.expires_at
        else "never expires"
    )
    stderr().print(
        f"API key {row.name!r} ({row.id}) for {owner}, {until}: store it now, it is not shown again"
    )


@keys_cli.command("list")
def keys_list(
    email: Annotated[str, typer.Argument(help="Whose keys")],
    json_output: JsonFlag = False,
) -> None:
    """List a user's API keys.

    Newest first, revoked ones included (the keys themselves are not kept)."""

    async def work() -> tuple[str, list[ApiKey]]:
        from app.core.db import get_sessionmaker
        from app.services.api_keys import list_api_keys

        async with get_sessionmaker()() as session:
            user = await _session_user(session, email)
            return user.email, await list_api_keys(session, user)

    owner, rows = run(work)
    if json_output:
        print_json({"user": owner, "api_keys": [_key_fields(row) for row in rows]})
        return
    table = [
        [
            row.id,
            row.name,
            row.prefix,
            row.created_at,
            row.revoked_at,
            row.expires_at,
            row.last_used_at,
        ]
        for row in rows
    ]
    columns = ["id", "name", "prefix", "created", "revoked", "expires", "last used"]
    print_rows(columns, table, title=f"API keys of {owner}")


@keys_cli.command("revoke")
def keys_revoke(
    email: Annotated[str, typer.Argument(help="Whose key")],
    key_id: Annotated[uuid.UUID, typer.Argument(help="The key's id (see `api-keys list`)")],
    json_output: JsonFlag = False,
) -> None:
    """Revoke one of a user's API keys.

    It stops working at once."""

    async def work() -> tuple[str, ApiKey, bool]:
        from app.core.db import get_sessionmaker
        from app.services.api_keys import list_api_keys, revoke_api_key

        async with get_sessionmaker()() as session:
            user = await _session_user(session, email)
            known = {row.id: row.revoked_at for row in await list_api_keys(session, user)}
            row = await revoke_api_key(session, user, key_id)
            if row is None:
                raise CommandError(f"{user.email} has no API key {key_id}")
            return user.email, row, known.get(key_id) is None

    owner, row, changed = run(work)
    if json_output:
        print_json({"user": owner, "api_key": _key_fields(row)})
    done = "revoked" if changed else "was already revoked"
    stderr().print(f"API key {row.name!r} ({row.id}) of {owner} {done}")


def audit_command(
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. user.update")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Events to show at most")] = 50,
    json_output: JsonFlag = False,
) -> None:
    """Show the audit trail, newest first.

    Who changed users, API keys and settings, when, and from what to what ("actor" is empty
    for changes made from the command line)."""
    from app.models import AuditAction, AuditEventPublic

    try:
        only = AuditAction(action) if action is not None else None
    except ValueError:
        choices = ", ".join(AuditAction)
        raise typer.BadParameter(f"choose one of: {choices}", param_hint="--action") from None

    async def work() -> tuple[list[AuditEventPublic], int]:
        from app.core.db import get_sessionmaker
        from app.services.audit import list_events

        async with get_sessionmaker()() as session:
            rows, count = await list_events(session, 0, limit, action=only)
            return [AuditEventPublic.model_validate(row) for row in rows], count

    events, count = run(work)
    if json_output:
        print_json({"count": count, "events": [e.model_dump(mode="json") for e in events]})
        return
    table = [
        [e.at, e.actor_email, e.action, e.target_type, e.target_id, _changes_text(e.changes)]
        for e in events
    ]
    print_rows(["at", "actor", "action", "target", "target id", "changes"], table)


def _changes_text(changes: dict[str, list[Any]]) -> str:
    return "; ".join(f"{name}: {before!r} → {after!r}" for name, (before, after) in changes.items())
