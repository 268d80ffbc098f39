"""The policy counters in a SQLite file, on one thread of their own.

Each operation is one function run on that thread with the standard library's `sqlite3`:
one hop from the event loop per operation, where the async driver hops once per statement,
BEGIN and COMMIT. `BEGIN IMMEDIATE` takes SQLite's write lock first, so the processes that
share the file count one at a time (a busy file is waited for, up to `BUSY_SECONDS`), and
concurrent admissions of one scope in this process are coalesced into one (see
`app.services.llm.coalesce`). Commits do not wait for the disk (`synchronous=OFF`): counts
are worth a minute, and a crash forgets only some calls of the current window.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

from app.core.db import DatabaseUnavailableError
from app.services.llm.coalesce import Coalescer, Reads, Takes

T = TypeVar("T")
BUSY_SECONDS = 30.0

_READ = "SELECT n FROM policycounter WHERE key = ?"
_ADD = (
    "INSERT INTO policycounter (key, n, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET n = policycounter.n + excluded.n"
)
_LIVE = "SELECT count(*) FROM policylease WHERE key = ? AND expires_at > ?"
_LEASE = "INSERT INTO policylease (key, lease_id, expires_at) VALUES (?, ?, ?)"
_RELEASE = "DELETE FROM policylease WHERE key = ? AND lease_id = ?"
_RENEW = "UPDATE policylease SET expires_at = ? WHERE key = ? AND lease_id = ?"
_SWEEP = (
    "DELETE FROM policycounter WHERE expires_at < ?",
    "DELETE FROM policylease WHERE expires_at < ?",
)


class SqliteCounters:
    """`Counters` in the SQLite file of `database_url` (see the module's docstring)."""

    def __init__(self, database_url: str, lease_seconds: float, sweep_every: int) -> None:
        self._path = make_url(database_url).database or ":memory:"
        self._lease_seconds = lease_seconds
        self._sweep_every = sweep_every
        self._takes = 0
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="policy-sqlite")
        self._coalescer = Coalescer(self._grant)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = _connect(self._path)
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        except sqlite3.Error as exc:
            raise DatabaseUnavailableError(str(exc).splitlines()[0][:200]) from exc
        return result

    async def admit(
        self, reads: Sequence[tuple[str, int]], takes: Sequence[tuple[str, int, float]]
    ) -> int | None:
        """See `Counters.admit` (coalesced with concurrent admissions of the same checks)."""
        return await self._coalescer.admit(reads, takes)

    async def _grant(self, reads: Reads, takes: Takes, n: int) -> tuple[int, int | None]:
        self._takes += n
        sweep = self._takes % self._sweep_every < n

        def grant(conn: sqlite3.Connection) -> tuple[int, int | None]:
            for index, (key, limit) in enumerate(reads):
                if _count(conn, key) >= limit:
                    return 0, index
            granted, refused = n, None
            for index, (key, limit, _) in enumerate(takes, len(reads)):
                room = max(limit - _count(conn, key), 0)
                if room < granted:
                    granted, refused = room, index
            if granted:
                conn.executemany(_ADD, [(key, granted, expires) for key, _, expires in takes])
            if sweep:
                _sweep(conn)
            return granted, refused

        return await self._run(grant)

    async def add_all(self, adds: Sequence[tuple[str, int, float]]) -> None:
        """See `Counters.add_all`."""
        rows = list(adds)
        await self._run(lambda conn: conn.executemany(_ADD, rows))

    async def lease(self, key: str, lease_id: str, limit: int) -> bool:
        """See `Counters.lease`."""
        now = time.time()

        def take(conn: sqlite3.Connection) -> bool:
            if int(conn.execute(_LIVE, (key, now)).fetchone()[0]) >= limit:
                return False
            conn.execute(_LEASE, (key, lease_id, now + self._lease_seconds))
            return True

        return await self._run(take)

    async def release(self, key: str, lease_id: str) -> None:
        """See `Counters.release`."""
        await self._run(lambda conn: conn.execute(_RELEASE, (key, lease_id)))

    async def renew(self, leases: Iterable[tuple[str, str]]) -> None:
        """See `Counters.renew`."""
        expires = time.time() + self._lease_seconds
        rows = [(expires, key, lease_id) for key, lease_id in leases]
        if rows:
            await self._run(lambda conn: conn.executemany(_RENEW, rows))


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    return conn


def _count(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute(_READ, (key,)).fetchone()
    return int(row[0]) if row else 0


def _sweep(conn: sqlite3.Connection) -> None:
    now = time.time()
    for statement in _SWEEP:
        conn.execute(statement, (now,))
