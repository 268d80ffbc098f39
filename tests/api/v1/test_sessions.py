"""Sessions end when the password changes or the user is deactivated; API keys are separate."""

from __future__ import annotations

import httpx

from tests.conftest import LLMEnv, UserFactory, login

ME = "/api/v1/users/me"
MY_PASSWORD = "/api/v1/users/me/password"


async def _api_key(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    created = await client.post("/api/v1/api-keys", json={"name": "cli"}, headers=headers)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


async def test_an_admin_password_reset_ends_every_session_but_not_api_keys(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user()
    laptop = await login(client, user.email, user.password)
    key = await _api_key(client, user.headers)
    for headers in (user.headers, laptop, key):  # all cached in this worker now
        assert (await client.get(ME, headers=headers)).status_code == 200
    reset = await client.patch(
        f"/api/v1/users/{user.id}", json={"password": "reset-by-admin"}, headers=admin_headers
    )
    assert reset.status_code == 200
    for headers in (user.headers, laptop):
        ended = await client.get(ME, headers=headers)
        assert ended.status_code == 401
        assert ended.json()["detail"] == "Session ended (password changed or account deactivated)"
    assert (await client.get(ME, headers=key)).status_code == 200
    assert (
        await client.get(ME, headers=await login(client, user.email, "reset-by-admin"))
    ).is_success


async def test_a_user_changes_their_own_password(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    phone = await login(client, user.email, user.password)
    key = await _api_key(client, user.headers)
    changed = await client.patch(
        MY_PASSWORD,
        json={"current_password": user.password, "new_password": "my-new-password"},
        headers=user.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["token_type"] == "bearer"
    this_session = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    assert (await client.get(ME, headers=this_session)).status_code == 200
    for headers in (user.headers, phone):
        assert (await client.get(ME, headers=headers)).status_code == 401
    assert (await client.get(ME, headers=key)).status_code == 200
    await login(client, user.email, "my-new-password")
    old = await client.post(
        "/api/v1/login/access-token", data={"username": user.email, "password": user.password}
    )
    assert old.status_code == 400


async def test_a_wrong_current_password_changes_nothing_and_counts_toward_the_limit(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_account=2)
    user = await make_user()
    body = {"current_password": "not-my-password", "new_password": "my-new-password"}
    for _ in range(2):
        wrong = await client.patch(MY_PASSWORD, json=body, headers=user.headers)
        assert wrong.status_code == 400
        assert wrong.json() == {"detail": "Incorrect current password"}
    assert (await client.get(ME, headers=user.headers)).status_code == 200  # session intact
    right = {"current_password": user.password, "new_password": "my-new-password"}
    locked = await client.patch(MY_PASSWORD, json=right, headers=user.headers)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1


async def test_a_password_change_is_validated_and_needs_a_session(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    short = await client.patch(
        MY_PASSWORD,
        json={"current_password": user.password, "new_password": "s3cr"},
        headers=user.headers,
    )
    assert short.status_code == 422
    assert [err["loc"] for err in short.json()["detail"]] == [["body", "new_password"]]
    assert "s3cr" not in short.text
    assert user.password not in short.text
    body = {"current_password": user.password, "new_password": "my-new-password"}
    assert (await client.patch(MY_PASSWORD, json=body)).status_code == 401


async def test_deactivation_revokes_api_keys_for_good(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user()
    key = await _api_key(client, user.headers)
    assert (await client.delete(f"/api/v1/users/{user.id}", headers=admin_headers)).is_success
    reactivated = await client.patch(
        f"/api/v1/users/{user.id}", json={"is_active": True}, headers=admin_headers
    )
    assert reactivated.status_code == 200
    assert (await client.get(ME, headers=key)).status_code == 401
    assert (await client.get(ME, headers=user.headers)).status_code == 401
    fresh = await login(client, user.email, user.password)
    keys = (await client.get("/api/v1/api-keys", headers=fresh)).json()
    assert [k["revoked_at"] is not None for k in keys] == [True]


async def test_other_changes_keep_sessions(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user()
    renamed = await client.patch(
        f"/api/v1/users/{user.id}",
        json={"full_name": "New Name", "is_superuser": True},
        headers=admin_headers,
    )
    assert renamed.status_code == 200
    me = await client.get(ME, headers=user.headers)
    assert me.status_code == 200
    assert (me.json()["full_name"], me.json()["is_superuser"]) == ("New Name", True)
