"""Writing the usage ledger: records buffered in memory, inserted in batches off the calls.

A finished call's record (`app.services.llm.ledger`) is appended to a bounded buffer, which
costs the call no I/O. A background task per process inserts what is buffered every
`FLUSH_SECONDS` (sooner once `FLUSH_ROWS` wait), as one batched INSERT per batch (on
SQLite the DB-API's executemany with values bound as SQLAlchemy would bind them), and
deletes rows past `USAGE_RETENTION_DAYS` every `CLEANUP_SECONDS`. The app's lifespan
flushes what is left on a clean shutdown; a script using the library gets the same at the
end of `asyncio.run()` (`close_at_loop_shutdown`). While the database cannot be written,
rows wait in the buffer, at most `MAX_BUFFERED` of them: past that the oldest are dropped
and counted in `usage_rows_dropped_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import delete, insert
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col

from app.core.config import get_settings
from app.core.db import get_engine, unavailable_reason
from app.core.loop_shutdown import close_at_loop_shutdown
from app.models import UsageEntry
from app.services.llm.ledger import LedgerEntry

logger = logging.getLogger("app.services.usage")

FLUSH_SECONDS = 1.0
FLUSH_ROWS = 500
BATCH_ROWS = 1000
MAX_BUFFERED = 100_000
CLEANUP_SECONDS = 3600.0

DROPPED = Counter(
    "usage_rows_dropped_total",
    "Usage ledger rows dropped because the buffer was full (the database could not be written)",
)
BUFFERED = Gauge("usage_rows_buffered", "Usage ledger rows waiting to be written")
WRITTEN = Counter("usage_rows_written_total", "Usage ledger rows written to the database")


class UsageWriter:
    """The process's buffer of usage records and the task that writes them."""

    def __init__(self, max_buffered: int = MAX_BUFFERED) -> None:
        self.max_buffered = max_buffered
        self._rows: deque[LedgerEntry] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._next_cleanup = 0.0

    def submit(self, entry: LedgerEntry) -> None:
        """Buffer `entry` (no I/O); start the writer if this loop has none yet."""
        if len(self._rows) >= self.max_buffered:
            self._rows.popleft()
            DROPPED.inc()
        self._rows.append(entry)
        if self._task is None or self._task.done():
            self.start()
        elif len(self._rows) >= FLUSH_ROWS and self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Start the background writer on the running loop (nothing without one)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # rows wait for a loop that writes them (bounded)
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._wake, self._lock = asyncio.Event(), asyncio.Lock()
        self._task = loop.create_task(self._run(), name="usage-ledger-writer")
        close_at_loop_shutdown("usage-ledger", self.stop, first=True)  # before the engine

    async def stop(self) -> None:
        """Stop the background writer and write what is buffered (a clean shutdown)."""
        task, self._task = self._task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def flush(self) -> int:
        """Write the rows buffered when called; the number written (fewer if the database
        failed). Rows that arrive meanwhile wait for the next flush: under steady load a
        flush that chased them would never end, writing a few rows per INSERT."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            written, left = 0, len(self._rows)
            while left > 0 and self._rows:
                size = min(BATCH_ROWS, left, len(self._rows))
                left -= size
                batch = [self._rows.popleft() for _ in range(size)]
                try:
                    await self._insert(batch)
                except (SQLAlchemyError, OSError) as exc:
                    self._put_back(batch)
                    logger.warning(
                        "usage ledger: %d rows not written yet: %s",
                        len(self._rows),
                        unavailable_reason(exc) or type(exc).__name__,
                    )
                    break
                written += len(batch)
                WRITTEN.inc(len(batch))
            return written

    def pending(self) -> int:
        """How many rows wait to be written."""
        return len(self._rows)

    def _put_back(self, batch: list[LedgerEntry]) -> None:
        room = self.max_buffered - len(self._rows)
        kept = batch[-room:] if room > 0 else []
        DROPPED.inc(len(batch) - len(kept))
        self._rows.extendleft(reversed(kept))

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                await self._clean_up_now_and_then()
            except Exception:  # the writer must outlive any one failure
                logger.exception("usage ledger writer failed; retrying")

    async def _insert(self, batch: list[LedgerEntry]) -> None:
        # connect(), not begin() (an async generator): this also runs at a loop's shutdown,
        # when no new async generator may start.
        async with get_engine().connect() as connection:
            if connection.dialect.name == "sqlite":
                # The DB-API's executemany with the values as SQLite stores them: SQLAlchemy's
                # per-row parameter processing was most of a row's cost (see _sqlite_row).
                await connection.exec_driver_sql(_sqlite_insert(), [_sqlite_row(e) for e in batch])
            else:
                await connection.execute(insert(UsageEntry), [_row(e) for e in batch])
            await connection.commit()

    async def _clean_up_now_and_then(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_cleanup:
            return
        self._next_cleanup = loop.time() + CLEANUP_SECONDS
        await delete_expired(get_settings().usage_retention_days)


_COLUMNS = (
    "created_at",
    "user_id",
    "api_key_id",
    "kind",
    "provider",
    "model",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "cost",
)


@cache
def _sqlite_insert() -> str:
    """The INSERT for SQLite, `?` placeholders in _COLUMNS' order (compiled on first use:
    a PostgreSQL deployment never loads the SQLite dialect)."""
    from sqlalchemy.dialects import sqlite

    return str(insert(UsageEntry).compile(dialect=sqlite.dialect(), column_keys=_COLUMNS))


def _row(entry: LedgerEntry) -> dict[str, Any]:
    at, user, key, kind, provider, model, outcome, prompt, completion, ms, cost = entry
    values = (
        datetime.fromtimestamp(at, UTC),
        None if user is None else uuid.UUID(int=user),
        None if key is None else uuid.UUID(int=key),
        kind[:16],
        provider[:32],
        model[:200],
        outcome[:64],
        prompt,
        completion,
        round(ms, 3),
        cost,
    )
    return dict(zip(_COLUMNS, values, strict=True))


def _sqlite_row(entry: LedgerEntry) -> tuple[object, ...]:
    """`entry` as SQLAlchemy would bind it on SQLite (tested against it): the time as
    'YYYY-MM-DD HH:MM:SS.ffffff' in UTC, a UUID as 32 hex digits."""
    at, user, key, kind, provider, model, outcome, prompt, completion, ms, cost = entry
    return (
        datetime.fromtimestamp(at, UTC).isoformat(" ", "microseconds")[:26],
        None if user is None else f"{user:032x}",
        None if key is None else f"{key:032x}",
        kind[:16],
        provider[:32],
        model[:200],
        outcome[:64],
        prompt,
        completion,
        round(ms, 3),
        cost,
    )


async def delete_expired(retention_days: int) -> int:
    """Delete ledger rows older than `retention_days` (0: keep all); how many went."""
    if retention_days <= 0:
        return 0
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    async with get_engine().connect() as connection:
        result = await connection.execute(
            delete(UsageEntry).where(col(UsageEntry.created_at) < cutoff)
        )
        await connection.commit()
    return int(getattr(result, "rowcount", 0) or 0)


usage_writer = UsageWriter()
BUFFERED.set_function(usage_writer.pending)  # read when scraped: nothing to do per call


def submit(entry: LedgerEntry) -> None:
    """Buffer a finished call's record for the ledger."""
    usage_writer.submit(entry)
