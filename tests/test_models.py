"""What the schemas in app/models.py let reach the database and what they emit, over HTTP on
both databases: control characters refused, timestamps in UTC with an offset, emails in the
format the API declares.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from email_validator import validate_email

from tests.conftest import ADMIN_EMAIL, LLMEnv, UserFactory, login

Headers = dict[str, str]

# NUL broke PostgreSQL (500, keep-alive dropped); the rest are log-injection or invisible.
HOSTILE = ["a\x00b", "line\nbreak", "cr\rreturn", "tab\there", "del\x7f", "c1\x85", "ls\u2028"]


# ── control characters ───────────────────────────────────────────────────────


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
async def test_user_full_name_with_control_characters_is_422(
    client: httpx.AsyncClient, admin_headers: Headers, make_user: UserFactory, value: str
) -> None:
    email = f"ctl-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "password-123", "full_name": value}
    created = await client.post("/api/v1/users", json=body, headers=admin_headers)
    assert created.status_code == 422, created.text
    assert created.json()["detail"][0]["loc"][-1] == "full_name"
    assert "control characters" in created.json()["detail"][0]["msg"]
    user = await make_user(log_in=False)
    patched = await client.patch(
        f"/api/v1/users/{user.id}", json={"full_name": value}, headers=admin_headers
    )
    assert patched.status_code == 422, patched.text


@pytest.mark.parametrize("field", ["email", "password"])
async def test_user_email_and_password_with_nul_are_422(
    client: httpx.AsyncClient, admin_headers: Headers, field: str
) -> None:
    body = {"email": f"nul-{uuid.uuid4().hex[:8]}@example.com", "password": "password-123"}
    body[field] = body[field].replace("-", "-\x00")
    response = await client.post("/api/v1/users", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
async def test_api_key_name_with_control_characters_is_422(
    client: httpx.AsyncClient, make_user: UserFactory, value: str
) -> None:
    user = await make_user()
    response = await client.post("/api/v1/api-keys", json={"name": value}, headers=user.headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == "name"


@pytest.mark.parametrize("field", ["lmstudio_model", "openai_model"])
async def test_llm_settings_model_with_nul_is_422(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers, field: str
) -> None:
    body = {"provider": "lmstudio", field: "model\x00name"}
    response = await client.patch("/api/v1/llm-settings", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


@pytest.mark.parametrize("username", ["admin\x00@example.com", ADMIN_EMAIL + "\x00", "a\r\nb"])
async def test_login_username_with_control_characters_is_422_and_keeps_the_connection(
    client: httpx.AsyncClient, username: str
) -> None:
    form = {"username": username, "password": "whatever-password"}
    response = await client.post("/api/v1/login/access-token", data=form)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "username"]
    assert "\x00" not in response.text
    assert (await client.get("/api/v1/health")).status_code == 200


async def test_login_password_with_nul_is_just_a_wrong_password(client: httpx.AsyncClient) -> None:
    # A password is only hashed and compared, never stored: no reason to answer differently.
    form = {"username": ADMIN_EMAIL, "password": "admin\x00password"}
    response = await client.post("/api/v1/login/access-token", data=form)
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "Incorrect email or password"}


async def test_readable_unicode_is_stored_as_sent(
    client: httpx.AsyncClient, admin_headers: Headers, make_user: UserFactory
) -> None:
    # Format characters are not control characters: Persian names need ZWNJ, emoji need ZWJ.
    name = "Zoë Ωmega مهدی\u200cپور 👩\u200d💻"
    user = await make_user()
    patched = await client.patch(
        f"/api/v1/users/{user.id}", json={"full_name": name}, headers=admin_headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["full_name"] == name
    key = await client.post("/api/v1/api-keys", json={"name": name[:20]}, headers=user.headers)
    assert key.status_code == 201, key.text
    assert key.json()["name"] == name[:20]


# ── timestamps ───────────────────────────────────────────────────────────────

_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")


def _datetimes(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [d for item in value.values() for d in _datetimes(item)]
    if isinstance(value, list):
        return [d for item in value for d in _datetimes(item)]
    return [value] if isinstance(value, str) and _DATETIME.match(value) else []


async def test_every_timestamp_in_every_response_is_utc_with_an_offset(
    client: httpx.AsyncClient, llm_env: LLMEnv, admin_headers: Headers, make_user: UserFactory
) -> None:
    user = await make_user()
    key = await client.post("/api/v1/api-keys", json={"name": "ts"}, headers=user.headers)
    responses = [
        key,
        await client.delete(f"/api/v1/api-keys/{key.json()['id']}", headers=user.headers),
        await client.get("/api/v1/api-keys", headers=user.headers),
        await client.get("/api/v1/users/me", headers=user.headers),
        await client.get("/api/v1/users", headers=admin_headers),
        await client.get(f"/api/v1/users/{user.id}", headers=admin_headers),
        await client.patch(
            f"/api/v1/users/{user.id}", json={"full_name": "T"}, headers=admin_headers
        ),
        await client.post(
            "/api/v1/users",
            json={"email": f"ts-{uuid.uuid4().hex[:8]}@example.com", "password": "password-1"},
            headers=admin_headers,
        ),
        await client.delete(f"/api/v1/users/{user.id}", headers=admin_headers),
        await client.post(
            "/api/v1/llm-settings",
            json={"provider": "lmstudio", "lmstudio_model": "m1"},
            headers=admin_headers,
        ),
        await client.patch(
            "/api/v1/llm-settings", json={"lmstudio_model": "m2"}, headers=admin_headers
        ),
        await client.get("/api/v1/llm-settings", headers=admin_headers),
    ]
    seen: list[str] = []
    for response in responses:
        assert response.is_success, (response.request.url, response.text)
        seen += _datetimes(response.json()) if response.content else []
    assert len(seen) >= 12, seen  # every route above emits at least one
    naive = [d for d in seen if not (d.endswith("Z") or d.endswith("+00:00"))]
    assert not naive, naive


# ── emails ───────────────────────────────────────────────────────────────────


def _openapi_email_format(openapi: dict[str, Any], schema: str) -> str:
    prop = openapi["components"]["schemas"][schema]["properties"]["email"]
    options = prop.get("anyOf", [prop])
    return next(o["format"] for o in options if o.get("type") == "string")


async def test_internationalised_email_is_stored_normalised_and_declared_idn_email(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    sent = f"JOSÉ-{uuid.uuid4().hex[:6]}@Exämple.COM"
    created = await client.post(
        "/api/v1/users", json={"email": sent, "password": "password-123"}, headers=admin_headers
    )
    assert created.status_code == 201, created.text
    stored = created.json()["email"]
    assert stored == sent.lower()
    # What the API emits satisfies what it declares (RFC 6531, `idn-email`) ...
    validate_email(stored, check_deliverability=False)
    openapi = (await client.get("/openapi.json")).json()
    for schema in ("UserPublic", "UserCreate", "UserUpdate"):
        assert _openapi_email_format(openapi, schema) == "idn-email", schema
    # ... and the address logs in however the user types its case.
    await login(client, sent.upper(), "password-123")
