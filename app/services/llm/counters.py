"""Counters and leases shared by every worker and replica: what policy limits are kept in.

One small interface (`Counters`) over the database the service already has (PostgreSQL,
or SQLite for a single machine). Each operation is one atomic statement or one short
transaction, so limits hold exactly however many processes count at once:

- `admit`: in one transaction, token counts read against their limits, then requests
  counted, +1 each unless at the limit (`INSERT … ON CONFLICT DO UPDATE … WHERE n < limit
  RETURNING n`: the row lock makes concurrent admissions queue, none passes the limit);
  all or nothing;
- `add_all`: the tokens a call spent, counted after it;
- `lease` / `release` / `renew`: running streams. A lease expires unless renewed, so the
  streams of a process that died stop counting after `LEASE_SECONDS`.

Keys name a scope, a limit and a window ("k:<id>:rpm:<minute>"): a new window is a new row,
and rows past their expiry are deleted now and then.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import get_engine

LEASE_SECONDS = 60.0
"""How long a stream's lease lasts without renewal (renewed every third of it)."""
SWEEP_EVERY = 1000
"""Expired rows are deleted once every this many takes of a process."""

_TAKE = text(
    "INSERT INTO policycounter (key, n, expires_at) VALUES (:key, 1, :expires) "
    "ON CONFLICT (key) DO UPDATE SET n = policycounter.n + 1 "
    "WHERE policycounter.n < :limit RETURNING n"
)
_ADD = text(
    "INSERT INTO policycounter (key, n, expires_at) VALUES (:key, :amount, :expires) "
    "ON CONFLICT (key) DO UPDATE SET n = policycounter.n + :amount"
)
_READ = text("SELECT n FROM policycounter WHERE key = :key")
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
_LIVE = text("SELECT count(*) FROM policylease WHERE key = :key AND expires_at > :now")
_LEASE = text("INSERT INTO policylease (key, lease_id, expires_at) VALUES (:key, :id, :expires)")
_RELEASE = text("DELETE FROM policylease WHERE key = :key AND lease_id = :id")
_RENEW = text("UPDATE policylease SET expires_at = :expires WHERE key = :key AND lease_id = :id")
_SWEEP = (
    text("DELETE FROM policycounter WHERE expires_at < :now"),
    text("DELETE FROM policylease WHERE expires_at < :now"),
)


class Counters:
    """The shared counters, in the service's database."""

    def __init__(self) -> None:
        self._takes = 0

    async def admit(
        self, reads: Sequence[tuple[str, int]], takes: Sequence[tuple[str, int, float]]
    ) -> int | None:
        """One transaction: each of `reads` (key, limit) must be under its limit, then each of
        `takes` (key, limit, expires) is counted unless at its limit. All or nothing: the
        index (into `reads` + `takes`) of the first one at its limit, or None if admitted."""
        self._takes += 1
        async with get_engine().begin() as conn:
            for index, (key, limit) in enumerate(reads):
                if int((await conn.execute(_READ, {"key": key})).scalar() or 0) >= limit:
                    return index
            for index, (key, limit, expires) in enumerate(takes, len(reads)):
                values = {"key": key, "limit": limit, "expires": expires}
                if (await conn.execute(_TAKE, values)).first() is None:
                    await conn.rollback()  # the takes before it are not counted either
                    return index
            if self._takes % SWEEP_EVERY == 0:
                await _sweep(conn)
        return None

    async def add_all(self, adds: Sequence[tuple[str, int, float]]) -> None:
        """Count each of `adds` (key, amount, expires), in one transaction."""
        async with get_engine().begin() as conn:
            for key, amount, expires in adds:
                await conn.execute(_ADD, {"key": key, "amount": amount, "expires": expires})

    async def lease(self, key: str, lease_id: str, limit: int) -> bool:
        """Take a lease under `key` if fewer than `limit` live ones are held; whether taken."""
        now = time.time()
        async with get_engine().begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(_LOCK, {"key": key})  # until commit: leases of `key` queue
            else:  # SQLite: a write first, so that the transaction holds the write lock
                await conn.execute(_RELEASE, {"key": key, "id": lease_id})
            live = int((await conn.execute(_LIVE, {"key": key, "now": now})).scalar() or 0)
            if live >= limit:
                return False
            await conn.execute(_LEASE, {"key": key, "id": lease_id, "expires": now + LEASE_SECONDS})
        return True

    async def release(self, key: str, lease_id: str) -> None:
        """Give a lease back."""
        async with get_engine().begin() as conn:
            await conn.execute(_RELEASE, {"key": key, "id": lease_id})

    async def renew(self, leases: Iterable[tuple[str, str]]) -> None:
        """Extend these leases by `LEASE_SECONDS` from now."""
        expires = time.time() + LEASE_SECONDS
        rows = [{"key": key, "id": lease_id, "expires": expires} for key, lease_id in leases]
        if rows:
            async with get_engine().begin() as conn:
                await conn.execute(_RENEW, rows)


async def _sweep(conn: AsyncConnection) -> None:
    now = time.time()
    for statement in _SWEEP:
        await conn.execute(statement, {"now": now})


counters = Counters()
