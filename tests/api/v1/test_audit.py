"""The audit trail over HTTP: one event per change, with before/after, and no secret."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import AppUser, LLMEnv, UserFactory

PASSWORD = "a-good-password"


async def _events(
    client: httpx.AsyncClient, admin: AppUser, **filters: str
) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/audit", params=filters, headers=admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["data"])
    return list(body["data"])


async def _by(client: httpx.AsyncClient, admin: AppUser) -> list[dict[str, Any]]:
    """The events `admin` caused, newest first (each test uses an admin of its own)."""
    return await _events(client, admin, actor=admin.id)


def _only(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(events) == 1, events
    return events[0]


async def test_user_changes_are_recorded_once_each_with_before_and_after(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user(is_superuser=True)
    created = await client.post(
        "/api/v1/users",
        json={"email": "Audited-One@example.com", "password": "first-password-1"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    target = created.json()["id"]
    event = _only(await _by(client, admin))
    assert event["action"] == "user.create"
    assert event["target_type"] == "user"
    assert event["target_id"] == target
    assert event["actor_email"] == admin.email
    assert event["changes"]["email"] == [None, "audited-one@example.com"]
    assert event["changes"]["is_superuser"] == [None, False]
    assert "password" not in event["changes"]

    patched = await client.patch(
        f"/api/v1/users/{target}",
        json={"full_name": "Renamed", "is_superuser": True, "password": "second-password-2"},
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    events = await _by(client, admin)
    assert len(events) == 2
    update = events[0]  # newest first
    assert update["action"] == "user.update"
    assert update["changes"] == {
        "full_name": [None, "Renamed"],
        "is_superuser": [False, True],
        "password": [None, "password changed"],
    }

    gone = await client.delete(f"/api/v1/users/{target}", headers=admin.headers)
    assert gone.status_code == 200
    events = await _by(client, admin)
    assert [e["action"] for e in events] == ["user.deactivate", "user.update", "user.create"]
    assert events[0]["changes"] == {"is_active": [True, False]}


async def test_own_password_change_is_recorded_without_the_password(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    admin = await make_user(is_superuser=True)
    changed = await client.patch(
        "/api/v1/users/me/password",
        json={"current_password": user.password, "new_password": "brand-new-password"},
        headers=user.headers,
    )
    assert changed.status_code == 200, changed.text
    event = _only(await _events(client, admin, actor=user.id))
    assert event["action"] == "user.password_change"
    assert event["target_id"] == user.id
    assert event["changes"] == {"password": [None, "password changed"]}


async def test_key_creation_and_revocation_are_recorded(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    admin = await make_user(is_superuser=True)
    created = await client.post(
        "/api/v1/api-keys",
        json={"name": "ci", "expires_at": "2030-01-01T00:00:00Z"},
        headers=user.headers,
    )
    assert created.status_code == 201, created.text
    key = created.json()
    event = _only(await _events(client, admin, actor=user.id))
    assert event["action"] == "api_key.create"
    assert event["target_type"] == "api_key"
    assert event["target_id"] == key["id"]
    assert event["changes"]["name"] == [None, "ci"]
    assert event["changes"]["prefix"] == [None, key["prefix"]]
    assert event["changes"]["expires_at"][1].startswith("2030-01-01T00:00:00")

    revoked = await client.delete(f"/api/v1/api-keys/{key['id']}", headers=user.headers)
    assert revoked.status_code == 204
    again = await client.delete(f"/api/v1/api-keys/{key['id']}", headers=user.headers)
    assert again.status_code == 204  # already revoked: nothing changes, nothing recorded
    events = await _events(client, admin, actor=user.id, action="api_key.revoke")
    assert _only(events)["changes"]["revoked_at"][0] is None


async def test_settings_changes_are_recorded_with_before_and_after(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    admin = await make_user(is_superuser=True)
    for model in ("first-model", "second-model"):
        saved = await client.patch(
            "/api/v1/llm-settings",
            json={"provider": "lmstudio", "lmstudio_model": model},
            headers=admin.headers,
        )
        assert saved.status_code == 200, saved.text
    update, create = await _by(client, admin)
    assert create["action"] == "llm_settings.create"
    assert create["changes"]["lmstudio_model"] == [None, "first-model"]
    assert update["action"] == "llm_settings.update"
    assert update["target_type"] == "llm_settings"
    assert update["changes"] == {"lmstudio_model": ["first-model", "second-model"]}

    # A refused save is rolled back with its event: they share one transaction.
    refused = await client.patch(
        "/api/v1/llm-settings",
        json={"provider": "lmstudio", "lmstudio_model": None},  # written, then found unusable
        headers=admin.headers,
    )
    assert refused.status_code == 400, refused.text
    assert len(await _by(client, admin)) == 2


async def test_no_secret_is_ever_recorded(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user(is_superuser=True)
    secrets = ["first-secret-pass", "second-secret-pass", "third-secret-pass"]
    created = await client.post(
        "/api/v1/users",
        json={"email": "secretive@example.org", "password": secrets[0]},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    target = created.json()["id"]
    await client.patch(
        f"/api/v1/users/{target}", json={"password": secrets[1]}, headers=admin.headers
    )
    key = await client.post("/api/v1/api-keys", json={"name": "s"}, headers=admin.headers)
    secrets.append(key.json()["key"])
    await client.delete(f"/api/v1/api-keys/{key.json()['id']}", headers=admin.headers)
    secrets += [admin.headers["Authorization"].split()[1], "$argon2"]
    text = json.dumps(await _by(client, admin))
    assert len(await _by(client, admin)) == 4
    for secret in secrets:
        assert secret not in text
    assert "key_hash" not in text
    assert "hashed_password" not in text


async def test_filters_and_paging(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    admin = await make_user(is_superuser=True)
    for _ in range(3):
        await client.post("/api/v1/api-keys", json={"name": "p"}, headers=admin.headers)
    first = await client.get(
        "/api/v1/audit", params={"actor": admin.id, "limit": 2}, headers=admin.headers
    )
    assert first.json()["count"] == 3
    assert len(first.json()["data"]) == 2
    rest = await client.get(
        "/api/v1/audit", params={"actor": admin.id, "skip": 2}, headers=admin.headers
    )
    ids = [e["id"] for e in first.json()["data"] + rest.json()["data"]]
    assert len(set(ids)) == 3
    times = [e["at"] for e in first.json()["data"] + rest.json()["data"]]
    assert times == sorted(times, reverse=True)
    assert await _events(client, admin, actor=admin.id, target_type="user") == []
    assert len(await _events(client, admin, actor=admin.id, action="api_key.create")) == 3


@pytest.mark.parametrize(
    "params",
    [
        {"action": "user.explode"},
        {"target_type": "planet"},
        {"actor": "not-a-uuid"},
        {"limit": "0"},
        {"limit": "501"},
        {"skip": "-1"},
    ],
)
async def test_bad_filters_are_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], params: dict[str, str]
) -> None:
    response = await client.get("/api/v1/audit", params=params, headers=admin_headers)
    assert response.status_code == 422, response.text


async def test_only_admins_read_the_trail(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    assert (await client.get("/api/v1/audit", headers=user.headers)).status_code == 403
    assert (await client.get("/api/v1/audit")).status_code == 401
