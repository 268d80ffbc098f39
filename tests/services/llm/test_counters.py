"""The policy counters' two stores, the database and Redis, against the real servers."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from asyncio.subprocess import PIPE
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.services.llm.counters import PREFIX, Counters, RedisCounters, database_counters
from app.services.llm.redis_wire import RedisWire
from app.services.policies import effective

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["database", "redis"])
def store(request: pytest.FixtureRequest, database_url: str) -> Counters:
    if request.param == "redis":
        return RedisCounters(REDIS_URL)
    return database_counters(get_settings().database_url)


def _key(name: str) -> str:
    return f"test:{uuid.uuid4().hex}:{name}"


async def test_admission_is_all_or_nothing(store: Counters) -> None:
    rpm, user_rpm, tokens = _key("rpm"), _key("user-rpm"), _key("tpm")
    later = time.time() + 60
    assert await store.admit([(tokens, 10)], [(rpm, 5, later), (user_rpm, 1, later)]) is None
    # The user's limit refuses the second call; the key's count is not taken either.
    assert await store.admit([(tokens, 10)], [(rpm, 5, later), (user_rpm, 1, later)]) == 2
    assert await store.admit([], [(rpm, 2, later)]) is None  # 1 counted before, now 2
    assert await store.admit([], [(rpm, 2, later)]) == 0
    await store.add_all([(tokens, 10, later)])
    assert await store.admit([(tokens, 10)], []) == 0


async def test_concurrent_admissions_take_exactly_the_limit(store: Counters) -> None:
    # 60 at once with the same checks: coalesced where the store does (SQLite), never over.
    tokens, rpm, user_rpm = _key("tpm"), _key("rpm"), _key("user-rpm")
    later = time.time() + 60
    checks = ([(tokens, 10)], [(rpm, 25, later), (user_rpm, 40, later)])
    results = await asyncio.gather(*(store.admit(*checks) for _ in range(60)))
    assert Counter(results) == {None: 25, 1: 35}  # 1: the key's rpm (index after 1 read)
    # The user's count holds exactly the 25 admitted: 15 more fit, the 16th does not.
    more = await asyncio.gather(*(store.admit([], [(user_rpm, 40, later)]) for _ in range(16)))
    assert Counter(more) == {None: 15, 0: 1}
    await store.add_all([(tokens, 10, later)])
    assert set(await asyncio.gather(*(store.admit(*checks) for _ in range(5)))) == {0}


_HAMMER = """
import asyncio, sys, time
from app.services.llm.counters import database_counters
async def main():
    store = database_counters(sys.argv[1])
    later = time.time() + 60
    async def caller():
        return [await store.admit([], [(sys.argv[2], 150, later)]) for _ in range(15)]
    await asyncio.sleep(float(sys.argv[3]) - time.time())  # both start together
    got = await asyncio.gather(*(caller() for _ in range(20)))
    print(sum(r is None for results in got for r in results))
asyncio.run(main())
"""


async def test_two_processes_on_one_sqlite_file_admit_exactly_the_limit(
    database_url: str,
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's two processes: tests/api/test_policy_across_processes.py")
    key = _key("rpm")
    # 300 admissions each, 20 at a time, in many small batches that interleave.
    command = [sys.executable, "-c", _HAMMER, database_url, key, str(time.time() + 2)]
    processes = [
        await asyncio.create_subprocess_exec(*command, stdout=PIPE, cwd=ROOT) for _ in range(2)
    ]
    admitted = [int((await p.communicate())[0]) for p in processes]
    assert sum(admitted) == 150, admitted


async def test_a_lease_that_is_not_renewed_expires(store: Counters) -> None:
    key = _key("streams")
    assert await store.lease(key, "a", 1)
    assert not await store.lease(key, "b", 1)
    await store.renew([(key, "a")])
    assert not await store.lease(key, "b", 1)
    await _expire(store, key, "a")  # its process died: nobody renews it
    assert await store.lease(key, "b", 1)
    await store.release(key, "b")
    assert await store.lease(key, "c", 1)


async def _expire(store: Counters, key: str, lease_id: str) -> None:
    past = time.time() - 1
    if isinstance(store, RedisCounters):
        wire = RedisWire(REDIS_URL)
        await wire.call("ZADD", PREFIX + key, past, lease_id)
        await wire.close()
        return
    async with get_sessionmaker()() as session:
        await session.exec(  # type: ignore[call-overload]
            text("UPDATE policylease SET expires_at = :past WHERE key = :key AND lease_id = :id"),
            params={"past": past, "key": key, "id": lease_id},
        )
        await session.commit()


def test_a_keys_effective_policy_is_within_its_users() -> None:
    user = {"allowed_models": ["lmstudio/*", "gpt-4o"], "requests_per_minute": 10}
    key = {"allowed_models": ["qwen3", "openai/gpt-4o", "ollama/llama3"], "tokens_per_day": 5}
    policy = effective(user, key)
    assert policy is not None
    assert policy.allowed_models == ["lmstudio/qwen3", "openai/gpt-4o"]
    assert (policy.requests_per_minute, policy.tokens_per_day) == (10, 5)
    assert effective(None, None) is None
    assert effective(user, None) == effective(None, user)
