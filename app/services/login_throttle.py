"""Login throttling shared by every worker: attempts per account and per client, in the database.

Every attempt first takes a ticket: one atomic upsert per key adds it to the key's count in
the current window (a new window starts once the last one has ended) and returns the new
count. An attempt counted past a limit is refused without checking the password, so N
concurrent guesses get at most `limit` password checks, however they interleave and
whichever worker or replica serves them. A failed check keeps its ticket; a success clears
the account's count and gives the client its ticket back.

Unknown accounts are counted like real ones, so a refusal says nothing about which emails
exist. Keys are bounded: the account key is the lower-cased email (the form the lookup
uses) and is not stored at all when longer than any email can be; the client key is a
validated IP address (an IPv6 client's /64, which one machine usually holds whole).
Passwords are never stored. Rows whose window has ended are pruned now and then.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.config import Settings
from app.core.db import upsert_insert
from app.models import MAX_EMAIL_LENGTH, LoginThrottle

PRUNE_INTERVAL = 60.0  # seconds between two prunes by one worker
PRUNE_BATCH = 10_000  # rows per prune: bounded work in a login request
_last_prune = float("-inf")


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """How many attempts an account and a client get per window (0: no limit)."""

    per_account: int
    per_client: int
    window_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimits:
        """The limits configured by LOGIN_MAX_FAILURES_PER_* and LOGIN_WINDOW_SECONDS."""
        return cls(
            settings.login_max_failures_per_account,
            settings.login_max_failures_per_client,
            settings.login_window_seconds,
        )


class TooManyAttempts(Exception):
    """An account or client is past its limit until `retry_after` seconds from now."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many login attempts; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Ticket:
    """The counts an admitted attempt was added to."""

    account_key: str | None
    client_key: str | None


def account_key(username: str) -> str | None:
    """The key counting attempts on this account; None when no account can have it."""
    email = username.lower()  # as app.services.users.get_user_by_email looks it up
    return f"account:{email}" if len(email) <= MAX_EMAIL_LENGTH else None


def client_key(host: str | None) -> str:
    """The key counting attempts from this client address (an IPv6 client's /64)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return "client:unknown"  # not an IP (a Unix socket): such clients share one count
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"client:{address.ipv4_mapped}"
        return f"client:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"client:{address}"


def _take_ticket(dialect: str, key: str, now: float, window: float) -> sa.Insert:
    table = LoginThrottle.__table__  # type: ignore[attr-defined]
    ended = table.c.window_ends_at <= now
    return (
        upsert_insert(dialect)(table)
        .values(key=key, attempts=1, window_ends_at=now + window)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "attempts": sa.case((ended, 1), else_=table.c.attempts + 1),
                "window_ends_at": sa.case((ended, now + window), else_=table.c.window_ends_at),
            },
        )
        .returning(table.c.attempts, table.c.window_ends_at)
    )


async def admit(
    session: AsyncSession,
    limits: LoginLimits,
    *,
    username: str,
    client_host: str | None,
    now: float | None = None,
) -> Ticket:
    """Count one login attempt; raises TooManyAttempts when the account or client is past
    its limit (the password must then not be checked). Commits `session`."""
    now = time.time() if now is None else now
    dialect = session.get_bind().dialect.name
    keys = {
        "account": (account_key(username), limits.per_account),
        "client": (client_key(client_host), limits.per_client),
    }
    taken: dict[str, str | None] = {"account": None, "client": None}
    refused_until = 0.0
    # Always account first, then client: concurrent attempts lock rows in one order.
    for name, (key, limit) in keys.items():
        if key is None or limit <= 0:
            continue
        result = await session.exec(_take_ticket(dialect, key, now, limits.window_seconds))
        attempts, window_ends_at = result.one()
        taken[name] = key
        if attempts > limit:
            refused_until = max(refused_until, window_ends_at)
    await session.commit()
    await _prune_now_and_then(session, now)
    if refused_until:
        raise TooManyAttempts(max(1, math.ceil(refused_until - now)))
    return Ticket(taken["account"], taken["client"])


async def succeeded(session: AsyncSession, ticket: Ticket) -> None:
    """The attempt had the right password: clear the account's count, return the client's
    ticket. Commits `session`."""
    if ticket.account_key is not None:
        await session.exec(
            delete(LoginThrottle).where(col(LoginThrottle.key) == ticket.account_key)
        )
    if ticket.client_key is not None:
        await session.exec(
            update(LoginThrottle)
            .where(col(LoginThrottle.key) == ticket.client_key, col(LoginThrottle.attempts) > 0)
            .values(attempts=col(LoginThrottle.attempts) - 1)
        )
    await session.commit()


async def prune(session: AsyncSession, now: float, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` rows whose window ended before `now`; commits; returns how many.

    Rows another transaction holds are skipped (PostgreSQL), so a prune never waits for,
    or deadlocks with, the attempts being counted."""
    expired = (
        select(LoginThrottle.key)
        .where(col(LoginThrottle.window_ends_at) <= now)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = await session.exec(delete(LoginThrottle).where(col(LoginThrottle.key).in_(expired)))
    await session.commit()
    return result.rowcount


async def _prune_now_and_then(session: AsyncSession, now: float) -> None:
    global _last_prune
    if time.monotonic() - _last_prune >= PRUNE_INTERVAL:
        _last_prune = time.monotonic()
        await prune(session, now)
