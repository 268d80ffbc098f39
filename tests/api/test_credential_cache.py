"""The per-worker credential cache seen through HTTP: what changes apply at once, what later.

"Another worker" is simulated by writing to the database directly, bypassing the services
that drop this worker's cache entries.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from app.core.db import get_sessionmaker
from app.models import User
from tests.conftest import LLMEnv, UserFactory


async def _set_user(user_id: str, **columns: bool | int) -> None:
    async with get_sessionmaker()() as session:
        user = await session.get(User, uuid.UUID(user_id))
        assert user is not None
        for name, value in columns.items():
            setattr(user, name, value)
        await session.commit()


async def _api_key(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> tuple[str, dict[str, str]]:
    created = await client.post("/api/v1/api-keys", json={"name": "cache"}, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    return body["id"], {"Authorization": f"Bearer {body['key']}"}


async def _refused_within_two_periods(
    client: httpx.AsyncClient, headers: dict[str, str], *, period: float
) -> None:
    """Poll `/users/me` until it answers 401; that must come within 2 cache periods (+ slack)."""
    statuses = []
    for _ in range(30):
        await asyncio.sleep(0.05)
        statuses.append((await client.get("/api/v1/users/me", headers=headers)).status_code)
        if statuses[-1] == 401:
            break
    assert statuses[-1] == 401, statuses
    assert len(statuses) * 0.05 < 2 * period + 0.5


async def test_revoking_a_key_applies_at_once(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    key_id, key_headers = await _api_key(client, user.headers)
    assert (await client.get("/api/v1/users/me", headers=key_headers)).status_code == 200
    revoked = await client.delete(f"/api/v1/api-keys/{key_id}", headers=user.headers)
    assert revoked.status_code == 204
    after = await client.get("/api/v1/users/me", headers=key_headers)
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]


async def test_deactivating_a_user_applies_at_once_to_tokens_and_keys(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user()
    _, key_headers = await _api_key(client, user.headers)
    for headers in (user.headers, key_headers):  # both cached now
        assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200
    gone = await client.delete(f"/api/v1/users/{user.id}", headers=admin_headers)
    assert gone.status_code == 200
    for headers in (user.headers, key_headers):
        assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 401


async def test_another_workers_change_applies_within_two_cache_periods(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(auth_cache_seconds=0.3)
    user = await make_user()
    assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
    await _set_user(user.id, is_active=False)
    # Still cached right after the change (this is what the cache buys)...
    assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
    # ...and refused once the entry has been revalidated (bounded: 2 periods plus slack).
    await _refused_within_two_periods(client, user.headers, period=0.3)


async def test_another_workers_password_change_ends_sessions_within_two_cache_periods(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    # Without a notification (SQLite, or a listener reconnecting), revalidation does it.
    llm_env.set(auth_cache_seconds=0.3)
    user = await make_user()
    assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
    await _set_user(user.id, token_version=1)  # what a password change elsewhere leaves
    await _refused_within_two_periods(client, user.headers, period=0.3)


async def test_admin_routes_read_the_database_every_time(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user(is_superuser=True)
    assert (await client.get("/api/v1/llm-settings", headers=admin.headers)).status_code == 200
    assert (await client.get("/api/v1/users/me", headers=admin.headers)).status_code == 200
    await _set_user(admin.id, is_superuser=False)  # demoted by another worker
    refused = await client.get("/api/v1/llm-settings", headers=admin.headers)
    assert refused.status_code == 403


async def test_no_cache_when_disabled(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(auth_cache_seconds=0)
    user = await make_user()
    assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
    await _set_user(user.id, is_active=False)
    assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 401


async def test_a_forged_or_expired_token_is_refused_even_for_a_cached_user(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
    token = user.headers["Authorization"].removeprefix("Bearer ")
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    refused = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
