"""What the request path knows of each API key: its id, expiry and policy, and when it was
last used.

The credential cache (`app.services.credential_cache`) keeps the user behind a verified key;
this keeps, per key hash, the key's id and expiry read with it, so an expired key is refused
("API key expired") even while its user is cached. `last_used_at` is written at most once a
minute per key and worker, by a task of its own: no request waits on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from sqlmodel import col, update

from app.core.db import get_sessionmaker
from app.models import ApiKey, utcnow
from app.services.llm.policy import Scope

logger = logging.getLogger(__name__)

MAX_ENTRIES = 10_000
WRITE_INTERVAL = 60.0  # seconds between two writes of one key's last_used_at


@dataclass(frozen=True, slots=True)
class KeyFacts:
    key_id: uuid.UUID
    expires_at: float | None  # Unix seconds
    scope: Scope | None = None  # the key's policy, as enforced

    def expired(self) -> bool:
        """Whether the key is past its expiry."""
        return self.expires_at is not None and time.time() >= self.expires_at


class KeyUsage:
    """Key hash → facts, and the last-used writes (both bounded, oldest dropped first)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, interval: float = WRITE_INTERVAL) -> None:
        self._facts: OrderedDict[str, KeyFacts] = OrderedDict()
        self._written: OrderedDict[uuid.UUID, float] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_entries = max_entries
        self._interval = interval

    def remember(self, key_hash: str, facts: KeyFacts) -> None:
        """Keep what was read of a key with its owner."""
        self._facts[key_hash] = facts
        self._facts.move_to_end(key_hash)
        while len(self._facts) > self._max_entries:
            self._facts.popitem(last=False)

    def facts(self, key_hash: str) -> KeyFacts | None:
        """What is known of this key, if it was read recently."""
        return self._facts.get(key_hash)

    def used(self, key_id: uuid.UUID) -> None:
        """Note a use of the key: starts a write of last_used_at unless one was started
        within the interval."""
        now = time.monotonic()
        last = self._written.get(key_id)
        if last is not None and now - last < self._interval:
            return
        self._written[key_id] = now
        self._written.move_to_end(key_id)
        while len(self._written) > self._max_entries:
            self._written.popitem(last=False)
        task = asyncio.get_running_loop().create_task(_write_last_used(key_id))
        self._tasks.add(task)  # held until done, so it is not collected mid-write
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the writes under way (at shutdown, and in tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _write_last_used(key_id: uuid.UUID) -> None:
    try:
        async with get_sessionmaker()() as session:
            await session.exec(
                update(ApiKey)
                .where(col(ApiKey.id) == key_id)
                .values(last_used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            await session.commit()
    except Exception as exc:  # a lost last-used time must not fail anything
        logger.debug("last_used_at not written: %s", type(exc).__name__)


key_usage = KeyUsage()
