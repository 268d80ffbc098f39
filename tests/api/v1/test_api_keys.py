from __future__ import annotations

import httpx

from tests.conftest import UserFactory


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
