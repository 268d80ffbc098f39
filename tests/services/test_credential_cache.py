"""CredentialCache on its own: freshness, revalidation in the background, shared reads."""

from __future__ import annotations

import asyncio
import uuid

from app.models import User
from app.services.credential_cache import CredentialCache


def _user(**fields: object) -> User:
    return User(id=uuid.uuid4(), email="a@example.com", hashed_password="x", **fields)


class CountingLoader:
    """Returns `user` after `delay`, counting calls."""

    def __init__(self, user: User | None, delay: float = 0.0) -> None:
        self.user, self.delay, self.calls = user, delay, 0

    async def __call__(self) -> User | None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.user


async def test_concurrent_misses_share_one_read() -> None:
    cache, load = CredentialCache(), CountingLoader(_user(), delay=0.05)
    users = await asyncio.gather(*(cache.resolve("k", 10, load) for _ in range(50)))
    assert load.calls == 1
    assert all(u is load.user for u in users)


async def test_fresh_entry_is_served_without_reading() -> None:
    cache, load = CredentialCache(), CountingLoader(_user())
    await cache.resolve("k", 10, load)
    await cache.resolve("k", 10, load)
    assert load.calls == 1


async def test_stale_entry_is_served_while_one_background_read_refreshes_it() -> None:
    cache = CredentialCache()
    old, new = _user(full_name="old"), _user(full_name="new")
    await cache.resolve("k", 0.5, CountingLoader(old))
    await asyncio.sleep(0.6)  # stale, still usable (< 2 periods; wide, for a loaded machine)
    slow = CountingLoader(new, delay=0.05)
    served = await asyncio.gather(*(cache.resolve("k", 0.5, slow) for _ in range(10)))
    assert all(u is old for u in served)  # nobody waited for the check
    assert slow.calls == 1
    await asyncio.sleep(0.2)  # the background read is done
    assert await cache.resolve("k", 10, CountingLoader(None)) is new


async def test_expired_entry_waits_for_the_database() -> None:
    cache = CredentialCache()
    await cache.resolve("k", 0.02, CountingLoader(_user()))
    await asyncio.sleep(0.05)  # past 2 periods
    assert await cache.resolve("k", 0.02, CountingLoader(None)) is None


async def test_a_background_read_finding_nothing_drops_the_entry() -> None:
    cache = CredentialCache()
    await cache.resolve("k", 0.05, CountingLoader(_user()))
    await asyncio.sleep(0.06)
    await cache.resolve("k", 0.05, CountingLoader(None))  # served stale; revalidates
    await asyncio.sleep(0.01)
    assert await cache.resolve("k", 0.05, CountingLoader(None)) is None


async def test_forget_during_a_read_keeps_its_result_out_of_the_cache() -> None:
    cache, user = CredentialCache(), _user()
    slow = CountingLoader(user, delay=0.05)
    pending = asyncio.create_task(cache.resolve("k", 10, slow))
    await asyncio.sleep(0.01)
    cache.forget_user(user.id)  # e.g. deactivated while the read was in flight
    assert await pending is user  # the waiting request gets what it read...
    fresh = CountingLoader(None)
    assert await cache.resolve("k", 10, fresh) is None  # ...but nothing was cached
    assert fresh.calls == 1


async def test_forget_user_drops_all_of_their_credentials_only() -> None:
    cache, alice, bob = CredentialCache(), _user(), _user()
    for key, user in (("jwt-a", alice), ("key-a", alice), ("jwt-b", bob)):
        await cache.resolve(key, 10, CountingLoader(user))
    cache.forget_user(alice.id)
    assert await cache.resolve("jwt-a", 10, CountingLoader(None)) is None
    assert await cache.resolve("key-a", 10, CountingLoader(None)) is None
    assert await cache.resolve("jwt-b", 10, CountingLoader(None)) is bob


async def test_zero_ttl_never_caches_and_size_is_bounded() -> None:
    cache = CredentialCache(max_entries=3)
    load = CountingLoader(_user())
    await cache.resolve("k", 0, load)
    await cache.resolve("k", 0, load)
    assert load.calls == 2
    for index in range(5):
        await cache.resolve(f"k{index}", 10, CountingLoader(_user()))
    assert await cache.resolve("k0", 10, CountingLoader(None)) is None  # evicted
    assert await cache.resolve("k4", 10, CountingLoader(None)) is not None


async def test_a_caller_giving_up_does_not_cancel_the_shared_read() -> None:
    cache, load = CredentialCache(), CountingLoader(_user(), delay=0.05)
    first = asyncio.create_task(cache.resolve("k", 10, load))
    second = asyncio.create_task(cache.resolve("k", 10, load))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second is load.user
    assert load.calls == 1
