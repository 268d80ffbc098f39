"""A short-lived, per-worker cache of the user behind a verified credential.

Resolving a Bearer credential costs a database round trip (JWT → user row, API key hash →
key and user rows); on SQLite that is a thread hop and most of a request's CPU. For
`AUTH_CACHE_SECONDS` a worker reuses what it read. After that the entry is revalidated: one
background read per credential, while requests keep using the entry for at most one more
such period; past that they wait for the read. Under load a read waiting for its thread can
take longer than the requests themselves, which is why nobody waits for a routine check.

Changes this worker makes (deactivation, role changes, password resets, key revocation)
drop the affected entries at once. Other workers hear of them on PostgreSQL through
`NOTIFY credentials_changed` (sent by `notify_credentials_changed` inside the saving
transaction, payload the user's id), on which the worker's `SettingsWatcher` drops that
user's entries: within milliseconds. Without a listener (SQLite, or while it reconnects)
they see a change within about two periods. Admin routes never use the cache. Concurrent
misses for one credential share a single read.

Cached users are detached snapshots shared between requests: treat them as read-only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import User

logger = logging.getLogger(__name__)

MAX_ENTRIES = 10_000
NOTIFY_CHANNEL = "credentials_changed"
Loader = Callable[[], Awaitable[User | None]]


@dataclass(slots=True)
class _Entry:
    user: User
    fresh_until: float
    usable_until: float  # stale but usable while a revalidation runs


class CredentialCache:
    """Credential key → user, least recently stored evicted first when full."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._loading: dict[str, asyncio.Task[User | None]] = {}
        self._generation = 0  # bumped by every forget: a read started before it is stale

    async def resolve(self, key: str, ttl: float, load: Loader) -> User | None:
        """The user for `key`: cached if fresh enough, else from `load()` (shared)."""
        entry = self._entries.get(key)
        if entry is not None:
            now = time.monotonic()
            if now < entry.fresh_until:
                return entry.user
            if now < entry.usable_until:
                self._start_load(key, ttl, load)
                return entry.user
            del self._entries[key]
        # Shielded: one caller giving up (client gone) must not cancel the others' read.
        return await asyncio.shield(self._start_load(key, ttl, load))

    def _start_load(self, key: str, ttl: float, load: Loader) -> asyncio.Task[User | None]:
        task = self._loading.get(key)
        loop = asyncio.get_running_loop()
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(self._load(key, ttl, load))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    async def _load(self, key: str, ttl: float, load: Loader) -> User | None:
        generation = self._generation
        user = await load()
        if generation == self._generation:
            if user is None:
                self._entries.pop(key, None)  # revoked or deleted since it was cached
            else:
                self.put(key, user, ttl)
        return user

    def _finished(self, key: str, task: asyncio.Task[User | None]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A waiting caller sees the error too; a background revalidation only logs it.
            logger.debug("credential lookup failed: %s", type(exc).__name__)

    def put(self, key: str, user: User, ttl: float) -> None:
        """Remember `user` under `key` for `ttl` seconds (no-op when ttl is 0)."""
        if ttl <= 0:
            return
        now = time.monotonic()
        self._entries[key] = _Entry(user, now + ttl, now + 2 * ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Drop every credential of this user (after any change to them or their keys)."""
        self._generation += 1
        for key in [k for k, entry in self._entries.items() if entry.user.id == user_id]:
            del self._entries[key]

    def clear(self) -> None:
        """Drop everything."""
        self._generation += 1
        self._entries.clear()


credential_cache = CredentialCache()


async def notify_credentials_changed(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Tell every worker to drop `user_id`'s cached credentials once `session` commits.

    PostgreSQL delivers the notification only if (and when) the transaction commits; on
    other databases this does nothing and other workers rely on revalidation."""
    if session.get_bind().dialect.name == "postgresql":
        await session.exec(  # type: ignore[call-overload]
            text("SELECT pg_notify(:channel, :user_id)"),
            params={"channel": NOTIFY_CHANNEL, "user_id": str(user_id)},
        )


def on_credentials_notify(payload: str) -> None:
    """Handle a `credentials_changed` notification: drop that user's entries."""
    try:
        user_id = uuid.UUID(payload)
    except ValueError:
        credential_cache.clear()  # not one of ours: safest to forget everything
        return
    credential_cache.forget_user(user_id)
