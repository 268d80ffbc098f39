from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from app.core.db import get_sessionmaker
from app.models import ApiKey
from app.services.key_usage import key_usage
from tests.conftest import LLMEnv, UserFactory


async def test_key_is_shown_once_and_works_as_bearer(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    created = await client.post("/api/v1/api-keys", json={"name": "laptop"}, headers=user.headers)
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("lmb_")
    assert key.startswith(created.json()["prefix"])

    listed = await client.get("/api/v1/api-keys", headers=user.headers)
    assert [k["name"] for k in listed.json()] == ["laptop"]
    assert key not in listed.text

    me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    assert me.json()["email"] == user.email


async def test_revoked_key_stops_working_at_once(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    created = (
        await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    ).json()
    auth = {"Authorization": f"Bearer {created['key']}"}
    assert (await client.get("/api/v1/users/me", headers=auth)).status_code == 200
    revoked = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=user.headers)
    assert revoked.status_code == 204
    assert (await client.get("/api/v1/users/me", headers=auth)).status_code == 401
    listed = (await client.get("/api/v1/api-keys", headers=user.headers)).json()
    assert listed[0]["revoked_at"] is not None


async def test_users_cannot_revoke_each_others_keys(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, other = await make_user(), await make_user()
    created = (
        await client.post("/api/v1/api-keys", json={"name": "k"}, headers=owner.headers)
    ).json()
    response = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=other.headers)
    assert response.status_code == 404
    auth = {"Authorization": f"Bearer {created['key']}"}
    assert (await client.get("/api/v1/users/me", headers=auth)).status_code == 200


async def test_key_name_is_validated(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    for body in ({}, {"name": ""}, {"name": "x" * 101}):
        response = await client.post("/api/v1/api-keys", json=body, headers=user.headers)
        assert response.status_code == 422, body


async def test_keys_are_paged_and_paging_is_bounded(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    for name in ("first", "second", "third"):
        created = await client.post("/api/v1/api-keys", json={"name": name}, headers=user.headers)
        assert created.status_code == 201
    page = await client.get("/api/v1/api-keys?skip=1&limit=1", headers=user.headers)
    assert page.status_code == 200, page.text
    assert [k["name"] for k in page.json()] == ["second"]
    empty = await client.get(f"/api/v1/api-keys?skip={2**31 - 1}", headers=user.headers)
    assert empty.json() == []
    for query in ("skip=-1", "skip=9223372036854775808", "limit=0", "limit=501"):
        response = await client.get(f"/api/v1/api-keys?{query}", headers=user.headers)
        assert response.status_code == 422, (query, response.text)


def _in(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def test_key_expiry_is_validated(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    for expires_at in (
        _in(seconds=-5),  # past
        _in(days=5 * 366 + 2),  # beyond 5 years
        "2030-01-01T00:00:00",  # no time zone
        "tomorrow",
    ):
        body = {"name": "k", "expires_at": expires_at}
        response = await client.post("/api/v1/api-keys", json=body, headers=user.headers)
        assert response.status_code == 422, expires_at
    ok = await client.post(
        "/api/v1/api-keys", json={"name": "k", "expires_at": _in(days=30)}, headers=user.headers
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["expires_at"] is not None


async def _expire(key_id: str) -> None:
    """Move a key's expiry into the past (no API does that: an expiry is set at creation)."""
    async with get_sessionmaker()() as session:
        row = await session.get(ApiKey, uuid.UUID(key_id))
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await session.commit()


async def test_expired_key_is_refused_with_a_clear_401(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    created = await client.post(
        "/api/v1/api-keys", json={"name": "k", "expires_at": _in(days=1)}, headers=user.headers
    )
    auth = {"Authorization": f"Bearer {created.json()['key']}"}
    await _expire(created.json()["id"])
    refused = await client.get("/api/v1/users/me", headers=auth)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "API key expired"
    assert refused.headers["www-authenticate"] == "Bearer"


async def test_key_expiring_while_cached_is_refused(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(auth_cache_seconds=60)  # the user stays cached past the key's expiry
    user = await make_user()
    created = await client.post(
        "/api/v1/api-keys", json={"name": "k", "expires_at": _in(seconds=1)}, headers=user.headers
    )
    auth = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await client.get("/api/v1/users/me", headers=auth)).status_code == 200  # cached now
    await asyncio.sleep(1.1)
    refused = await client.get("/api/v1/users/me", headers=auth)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "API key expired"


async def test_last_used_at_is_set_after_use(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    created = (
        await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    ).json()
    assert created["last_used_at"] is None
    auth = {"Authorization": f"Bearer {created['key']}"}
    assert (await client.get("/api/v1/users/me", headers=auth)).status_code == 200
    await key_usage.drain()  # the write runs off the request path, in this process
    listed = (await client.get("/api/v1/api-keys", headers=user.headers)).json()
    used = listed[0]["last_used_at"]
    assert used is not None
    assert datetime.fromisoformat(used) >= datetime.fromisoformat(created["created_at"])
    # A second use within the minute writes nothing.
    assert (await client.get("/api/v1/users/me", headers=auth)).status_code == 200
    await key_usage.drain()
    listed = (await client.get("/api/v1/api-keys", headers=user.headers)).json()
    assert listed[0]["last_used_at"] == used


async def test_admins_list_any_users_keys(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user, other = await make_user(), await make_user()
    for name in ("one", "two"):
        await client.post("/api/v1/api-keys", json={"name": name}, headers=user.headers)
    listed = await client.get(f"/api/v1/users/{user.id}/api-keys", headers=admin_headers)
    assert listed.status_code == 200, listed.text
    assert [k["name"] for k in listed.json()] == ["two", "one"]
    assert "key" not in listed.json()[0]
    paged = await client.get(
        f"/api/v1/users/{user.id}/api-keys", params={"limit": 1}, headers=admin_headers
    )
    assert [k["name"] for k in paged.json()] == ["two"]
    unknown = await client.get(f"/api/v1/users/{uuid.uuid4()}/api-keys", headers=admin_headers)
    assert unknown.status_code == 404
    forbidden = await client.get(f"/api/v1/users/{user.id}/api-keys", headers=other.headers)
    assert forbidden.status_code == 403
