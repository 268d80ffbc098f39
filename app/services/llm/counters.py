"""Counters and leases shared by every worker and replica: what policy limits are kept in.

One small interface (`Counters`), three backends: the database the service already has
(`SqlCounters` on PostgreSQL; `SqliteCounters` for a single machine), or Redis when
`REDIS_URL` is set (`RedisCounters`, one Lua script per operation). Each operation is
atomic, so limits hold exactly however many processes count at once:

- `admit`: token counts read against their limits, then requests counted, +1 each unless
  at the limit; all or nothing (PostgreSQL: one statement, 0008's `policy_grant`; SQLite:
  one `BEGIN IMMEDIATE` transaction; on both, concurrent admissions of one scope in a
  process are coalesced into one grant, see `app.services.llm.coalesce`);
- `add_all`: the tokens a call spent, counted after it;
- `lease` / `release` / `renew`: running streams. A lease expires unless renewed, so the
  streams of a process that died stop counting after `LEASE_SECONDS`.

Keys name a scope, a limit and a window ("k:<id>:rpm:<minute>"): a new window is a new row,
and rows past their expiry are deleted now and then.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.config import get_settings
from app.core.db import create_engine
from app.core.loop_shutdown import close_at_loop_shutdown
from app.services.llm.coalesce import Coalescer, Reads, Takes
from app.services.llm.per_loop import PerLoop
from app.services.llm.redis_wire import RedisError, RedisWire, Reply

LEASE_SECONDS = 60.0
"""How long a stream's lease lasts without renewal (renewed every third of it)."""
SWEEP_EVERY = 1000
"""Expired rows are deleted once every this many takes of a process."""

_GRANT = text(
    "SELECT policy_grant(CAST(:read_keys AS text[]), CAST(:read_limits AS bigint[]), "
    "CAST(:take_keys AS text[]), CAST(:take_limits AS bigint[]), "
    "CAST(:take_expires AS float8[]), :wanted)"
)
_ADD_ALL = text(
    "INSERT INTO policycounter (key, n, expires_at) SELECT * FROM unnest("
    "CAST(:keys AS text[]), CAST(:amounts AS bigint[]), CAST(:expires AS float8[])) "
    "ON CONFLICT (key) DO UPDATE SET n = policycounter.n + EXCLUDED.n"
)
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
_LIVE = text("SELECT count(*) FROM policylease WHERE key = :key AND expires_at > :now")
_LEASE = text("INSERT INTO policylease (key, lease_id, expires_at) VALUES (:key, :id, :expires)")
_RELEASE = text("DELETE FROM policylease WHERE key = :key AND lease_id = :id")
_RENEW = text("UPDATE policylease SET expires_at = :expires WHERE key = :key AND lease_id = :id")
_SWEEP = (
    text("DELETE FROM policycounter WHERE expires_at < :now"),
    text("DELETE FROM policylease WHERE expires_at < :now"),
)


class Counters(Protocol):
    """What policy enforcement needs of a shared store (see the module's docstring)."""

    async def admit(
        self, reads: Sequence[tuple[str, int]], takes: Sequence[tuple[str, int, float]]
    ) -> int | None: ...

    async def add_all(self, adds: Sequence[tuple[str, int, float]]) -> None: ...

    async def lease(self, key: str, lease_id: str, limit: int) -> bool: ...

    async def release(self, key: str, lease_id: str) -> None: ...

    async def renew(self, leases: Iterable[tuple[str, str]]) -> None: ...


class SqlCounters:
    """The shared counters in PostgreSQL, through an engine of their own whose commits do
    not wait for the disk (`synchronous_commit=off`: counts are worth a minute, and a crash
    that loses the last few only forgets some calls of the current window; other tables
    keep full durability) and whose pooled connections are not pinged before each use: a
    statement whose connection turns out dead is sent once more on a new one (at worst a
    call counted twice, never one over a limit)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._takes = 0
        self._engine: AsyncEngine | None = None
        self._autocommit: tuple[AsyncEngine, AsyncEngine] | None = None
        self._coalescer = Coalescer(self._grant)

    def _statements(self) -> AsyncEngine:
        """The engine without transactions: each statement commits on its own, which spares
        the BEGIN and COMMIT round trips of a one-statement transaction."""
        engine = self._db()
        if self._autocommit is None or self._autocommit[0] is not engine:
            self._autocommit = (engine, engine.execution_options(isolation_level="AUTOCOMMIT"))
        return self._autocommit[1]

    def _db(self) -> AsyncEngine:
        if self._engine is None:
            engine = self._engine = create_engine(self._url, pre_ping=False)
            event.listen(engine.sync_engine, "connect", _no_flush)

            async def dispose() -> None:
                if self._engine is engine:
                    self._engine = None
                    await engine.dispose()

            with contextlib.suppress(RuntimeError):  # no running loop: nothing to tie it to
                close_at_loop_shutdown(("policy-counters", id(self)), dispose)
        return self._engine

    async def _execute(self, statement: Any, values: dict[str, Any]) -> Any:
        """`statement` in autocommit, sent again once if its pooled connection was dead."""
        for attempt in (1, 2):
            try:
                async with self._statements().connect() as conn:
                    result = await conn.execute(statement, values)
                    return result.scalar() if result.returns_rows else None
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def admit(
        self, reads: Sequence[tuple[str, int]], takes: Sequence[tuple[str, int, float]]
    ) -> int | None:
        """Each of `reads` (key, limit) must be under its limit, then each of `takes` (key,
        limit, expires) is counted unless at its limit. All or nothing: the index (into
        `reads` + `takes`) of the first one at its limit, or None if admitted. Concurrent
        admissions with the same checks share one statement (0008's `policy_grant`)."""
        return await self._coalescer.admit(reads, takes)

    async def _grant(self, reads: Reads, takes: Takes, n: int) -> tuple[int, int | None]:
        self._takes += n
        values: dict[str, Any] = {**_admit_arrays(reads, takes), "wanted": n}
        granted, refused = await self._execute(_GRANT, values)
        if self._takes % SWEEP_EVERY < n:
            async with self._statements().connect() as conn:
                await _sweep(conn)
        return int(granted), None if refused == -1 else int(refused)

    async def add_all(self, adds: Sequence[tuple[str, int, float]]) -> None:
        """Count each of `adds` (key, amount, expires), in one statement."""
        arrays = {
            "keys": [key for key, _, _ in adds],
            "amounts": [amount for _, amount, _ in adds],
            "expires": [expires for _, _, expires in adds],
        }
        await self._execute(_ADD_ALL, arrays)

    async def lease(self, key: str, lease_id: str, limit: int) -> bool:
        """Take a lease under `key` if fewer than `limit` live ones are held; whether taken."""
        now = time.time()
        async with self._db().begin() as conn:
            await conn.execute(_LOCK, {"key": key})  # until commit: leases of `key` queue
            live = int((await conn.execute(_LIVE, {"key": key, "now": now})).scalar() or 0)
            if live >= limit:
                return False
            await conn.execute(_LEASE, {"key": key, "id": lease_id, "expires": now + LEASE_SECONDS})
        return True

    async def release(self, key: str, lease_id: str) -> None:
        """Give a lease back."""
        async with self._db().begin() as conn:
            await conn.execute(_RELEASE, {"key": key, "id": lease_id})

    async def renew(self, leases: Iterable[tuple[str, str]]) -> None:
        """Extend these leases by `LEASE_SECONDS` from now."""
        expires = time.time() + LEASE_SECONDS
        rows = [{"key": key, "id": lease_id, "expires": expires} for key, lease_id in leases]
        if rows:
            async with self._db().begin() as conn:
                await conn.execute(_RENEW, rows)


def _admit_arrays(
    reads: Sequence[tuple[str, int]], takes: Sequence[tuple[str, int, float]]
) -> dict[str, list[Any]]:
    return {
        "read_keys": [key for key, _ in reads],
        "read_limits": [limit for _, limit in reads],
        "take_keys": [key for key, _, _ in takes],
        "take_limits": [limit for _, limit, _ in takes],
        "take_expires": [expires for _, _, expires in takes],
    }


def _no_flush(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit = off")
    cursor.close()


async def _sweep(conn: AsyncConnection) -> None:
    now = time.time()
    for statement in _SWEEP:
        await conn.execute(statement, {"now": now})


_ADMIT_LUA = """
local nreads = tonumber(ARGV[1])
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[1 + i]) then
    return i - 1
  end
end
for i = nreads + 1, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIREAT', KEYS[i], ARGV[1 + #KEYS + i - nreads])
end
return -1
"""
_ADD_LUA = """
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
  redis.call('EXPIREAT', KEYS[i], ARGV[2 * i])
end
return 0
"""
_LEASE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[4])) + 1)
return 1
"""
_RENEW_LUA = """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[1 + i])
  redis.call('EXPIREAT', KEYS[i], math.ceil(tonumber(ARGV[1])) + 1)
end
return 0
"""
PREFIX = "llm-policy:"


class RedisCounters:
    """The shared counters in Redis (`REDIS_URL`): each operation one Lua script, which
    Redis runs atomically. Keys expire with their window."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._wires: PerLoop[RedisWire] = PerLoop(self._new_wire)

    def _new_wire(self) -> RedisWire:
        wire = RedisWire(self._url)
        with contextlib.suppress(RuntimeError):  # closed with the loop that uses it
            close_at_loop_shutdown(("policy-redis", id(self)), wire.close)
        return wire

    async def _script(self, script: str, keys: Sequence[str], args: Sequence[object]) -> Reply:
        wire = self._wires.get()
        sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis's script id
        names = [PREFIX + key for key in keys]
        values = [str(a) for a in args]
        try:
            return await wire.call("EVALSHA", sha, len(names), *names, *values)
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await wire.call("EVAL", script, len(names), *names, *values)

    async def admit(
        self, reads: Sequence[tuple[str, int]], takes: Sequence[tuple[str, int, float]]
    ) -> int | None:
        """See `SqlCounters.admit`."""
        keys = [k for k, _ in reads] + [k for k, _, _ in takes]
        limits = [limit for _, limit in reads] + [limit for _, limit, _ in takes]
        expires = [math.ceil(e) for _, _, e in takes]
        refused = await self._script(_ADMIT_LUA, keys, [len(reads), *limits, *expires])
        return None if refused == -1 else int(refused)  # type: ignore[arg-type]

    async def add_all(self, adds: Sequence[tuple[str, int, float]]) -> None:
        """See `SqlCounters.add_all`."""
        args = [v for _, amount, e in adds for v in (amount, math.ceil(e))]
        await self._script(_ADD_LUA, [k for k, _, _ in adds], args)

    async def lease(self, key: str, lease_id: str, limit: int) -> bool:
        """See `SqlCounters.lease`."""
        now = time.time()
        args = [now, limit, lease_id, now + LEASE_SECONDS]
        return await self._script(_LEASE_LUA, [key], args) == 1

    async def release(self, key: str, lease_id: str) -> None:
        """See `SqlCounters.release`."""
        await self._wires.get().call("ZREM", PREFIX + key, lease_id)

    async def renew(self, leases: Iterable[tuple[str, str]]) -> None:
        """See `SqlCounters.renew`."""
        pairs = list(leases)
        if pairs:
            expires = time.time() + LEASE_SECONDS
            await self._script(_RENEW_LUA, [k for k, _ in pairs], [expires, *(i for _, i in pairs)])


_chosen: tuple[str, Counters] | None = None


def get_counters() -> Counters:
    """The store that settings choose: Redis when `REDIS_URL` is set, else the database."""
    global _chosen
    settings = get_settings()
    url = settings.redis_url or settings.database_url
    if _chosen is None or _chosen[0] != url:
        store = RedisCounters(url) if settings.redis_url else database_counters(url)
        _chosen = (url, store)
    return _chosen[1]


def database_counters(database_url: str) -> Counters:
    """The counters in the service's database: PostgreSQL's or SQLite's."""
    if database_url.startswith("sqlite"):
        from app.services.llm.sqlite_counters import SqliteCounters

        return SqliteCounters(database_url, LEASE_SECONDS, SWEEP_EVERY)
    return SqlCounters(database_url)
