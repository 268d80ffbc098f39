from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, UserFactory, login


async def test_login_returns_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/login/access-token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200
    assert response.json()["token_type"] == "bearer"


async def test_login_email_is_case_insensitive(client: httpx.AsyncClient) -> None:
    await login(client, ADMIN_EMAIL.upper(), ADMIN_PASSWORD)


async def test_wrong_password_and_unknown_email_look_the_same(client: httpx.AsyncClient) -> None:
    wrong = await client.post(
        "/api/v1/login/access-token", data={"username": ADMIN_EMAIL, "password": "nope-nope"}
    )
    unknown = await client.post(
        "/api/v1/login/access-token", data={"username": "ghost@example.com", "password": "x"}
    )
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json() == {"detail": "Incorrect email or password"}


async def test_login_without_form_fields_is_422_naming_them(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/login/access-token", data={})
    assert response.status_code == 422
    missing = {tuple(err["loc"]) for err in response.json()["detail"]}
    assert {("body", "username"), ("body", "password")} <= missing


async def test_me_never_exposes_password_hash(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    body = (await client.get("/api/v1/users/me", headers=user.headers)).json()
    assert body["email"] == user.email
    assert body["is_superuser"] is False
    assert not any("password" in key for key in body)


async def test_duplicate_email_is_409(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user(log_in=False)
    response = await client.post(
        "/api/v1/users",
        json={"email": user.email.upper(), "password": "password-123"},
        headers=admin_headers,
    )
    assert response.status_code == 409


async def test_validation_error_names_field_and_never_echoes_password(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/users",
        json={"email": "not-an-email", "password": "s3cr"},
        headers=admin_headers,
    )
    assert response.status_code == 422
    fields = {err["loc"][-1] for err in response.json()["detail"]}
    assert fields == {"email", "password"}
    assert "s3cr" not in response.text


async def test_list_users_pages(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await client.get("/api/v1/users?limit=1", headers=admin_headers)
    assert response.status_code == 200
    body = response.json()
    assert len(body["data"]) == 1
    assert body["count"] >= 1
    bad = await client.get("/api/v1/users?limit=0", headers=admin_headers)
    assert bad.status_code == 422


async def test_deactivated_user_cannot_log_in_and_reactivation_needs_a_new_login(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user()
    assert (await client.delete(f"/api/v1/users/{user.id}", headers=admin_headers)).is_success
    assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 401
    form = {"username": user.email, "password": user.password}
    denied = await client.post("/api/v1/login/access-token", data=form)
    assert denied.status_code == 400
    assert denied.json() == {"detail": "Inactive user"}
    patch = await client.patch(
        f"/api/v1/users/{user.id}", json={"is_active": True}, headers=admin_headers
    )
    assert patch.status_code == 200
    # The token from before the deactivation stays dead; a new login works.
    old = await client.get("/api/v1/users/me", headers=user.headers)
    assert old.status_code == 401
    assert "Session ended" in old.json()["detail"]
    fresh = await login(client, user.email, user.password)
    assert (await client.get("/api/v1/users/me", headers=fresh)).status_code == 200


async def test_admin_resets_password(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user(log_in=False)
    response = await client.patch(
        f"/api/v1/users/{user.id}", json={"password": "brand-new-pass"}, headers=admin_headers
    )
    assert response.status_code == 200
    await login(client, user.email, "brand-new-pass")


async def test_admin_cannot_lock_themselves_out(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    me = (await client.get("/api/v1/users/me", headers=admin_headers)).json()
    for request in (
        client.patch(f"/api/v1/users/{me['id']}", json={"is_active": False}, headers=admin_headers),
        client.delete(f"/api/v1/users/{me['id']}", headers=admin_headers),
    ):
        response = await request
        assert response.status_code == 400


async def test_unknown_user_is_404_and_bad_id_is_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await client.get(f"/api/v1/users/{missing}", headers=admin_headers)).status_code == 404
    assert (await client.get("/api/v1/users/123", headers=admin_headers)).status_code == 422


async def test_racing_creates_of_one_email_give_one_201_and_409s(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = {"email": f"race-{uuid.uuid4().hex[:8]}@example.com", "password": "password-123"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/users", json=body, headers=admin_headers) for _ in range(5))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409], [r.text for r in responses]


@pytest.mark.parametrize(
    "query",
    ["skip=-1", "skip=9223372036854775808", "skip=1e99", "limit=0", "limit=501", "limit=-5"],
)
async def test_out_of_range_paging_is_422_naming_the_parameter(
    client: httpx.AsyncClient, admin_headers: dict[str, str], query: str
) -> None:
    response = await client.get(f"/api/v1/users?{query}", headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", query.split("=")[0]]


async def test_largest_skip_is_an_empty_page(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get(f"/api/v1/users?skip={2**31 - 1}", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == []
    assert response.json()["count"] >= 1


@pytest.mark.parametrize("field", ["email", "is_active", "is_superuser"])
async def test_null_for_a_required_field_is_422_not_a_conflict(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str], field: str
) -> None:
    user = await make_user(log_in=False)
    response = await client.patch(
        f"/api/v1/users/{user.id}", json={field: None}, headers=admin_headers
    )
    assert response.status_code == 422, response.text
    assert f"{field} cannot be null" in response.text
