"""Every route, every kind of credential: the status it must answer."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.core.security import create_access_token
from tests.conftest import SECRET_KEY, AppUser, UserFactory

CREDENTIALS = [
    "none",
    "garbage",
    "expired",
    "other_key",
    "deactivated_jwt",
    "deactivated_api_key",
    "user",
    "admin",
    "api_key",
    "admin_api_key",
    "revoked_api_key",
]
REJECTED = {
    "none",
    "garbage",
    "expired",
    "other_key",
    "deactivated_jwt",
    "deactivated_api_key",
    "revoked_api_key",
}
ADMINS = {"admin", "admin_api_key"}


@dataclass
class Route:
    method: str
    path: str
    access: str  # "public" | "user" | "admin"
    ok: int
    body: Callable[[], dict[str, Any]] | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


LLM_CALL = {"prompt": "hi", "provider": "lmstudio", "model": "llama-3.2-3b-instruct"}


def _new_user_body() -> dict[str, Any]:
    return {"email": f"m-{uuid.uuid4().hex[:8]}@example.com", "password": "password-123"}


ROUTES = [
    Route("GET", "/api/v1/health", "public", 200),
    Route("GET", "/api/v1/health/ready", "public", 200),
    Route("GET", "/api/v1/users/me", "user", 200),
    Route("GET", "/api/v1/api-keys", "user", 200),
    Route("POST", "/api/v1/api-keys", "user", 201, lambda: {"name": "matrix"}),
    Route("DELETE", f"/api/v1/api-keys/{uuid.uuid4()}", "user", 404),
    Route("GET", f"/api/v1/api-keys/{uuid.uuid4()}", "user", 404),
    Route("PATCH", f"/api/v1/api-keys/{uuid.uuid4()}", "admin", 404, lambda: {"policy": None}),
    Route("GET", "/api/v1/users", "admin", 200),
    Route("POST", "/api/v1/users", "admin", 201, _new_user_body),
    Route("GET", "/api/v1/users/{target}", "admin", 200),
    Route("GET", "/api/v1/users/{target}/api-keys", "admin", 200),
    Route("GET", f"/api/v1/users/{uuid.uuid4()}/api-keys", "admin", 404),
    Route("GET", "/api/v1/audit", "admin", 200),
    Route("PATCH", "/api/v1/users/{target}", "admin", 200, lambda: {"full_name": "Renamed"}),
    Route(
        "PATCH",
        "/api/v1/users/{target}",
        "admin",
        200,
        lambda: {"policy": {"allowed_models": ["lmstudio/*"], "requests_per_minute": 5}},
    ),
    Route("DELETE", "/api/v1/users/{target}", "admin", 200),
    Route("GET", "/api/v1/llm-settings", "admin", 200),
    Route(
        "PATCH",
        "/api/v1/llm-settings",
        "admin",
        200,
        lambda: {"provider": "lmstudio", "lmstudio_model": "llama-3.2-3b-instruct"},
    ),
    Route("GET", "/api/v1/llm-settings/lmstudio/models", "user", 200),
    Route("GET", "/api/v1/llm-settings/fields", "admin", 200),
    Route("GET", "/api/v1/llm-settings/health?provider=lmstudio", "admin", 200),
    Route(  # loaded already: nothing changes on the stand-in
        "POST",
        "/api/v1/llm-settings/lmstudio/models/load",
        "admin",
        200,
        lambda: {"model": "llama-3.2-3b-instruct"},
    ),
    Route(
        "POST",
        "/api/v1/llm-settings/lmstudio/models/unload",
        "admin",
        404,
        lambda: {"model": "not-downloaded"},
    ),
    Route("POST", "/api/v1/llm/generate", "user", 200, lambda: dict(LLM_CALL)),
    Route("POST", "/api/v1/llm/stream", "user", 200, lambda: dict(LLM_CALL)),
    Route(
        "POST",
        "/api/v1/llm/structured",
        "user",
        200,
        lambda: {**LLM_CALL, "schema": {"type": "object", "properties": {}}},
    ),
    Route("GET", "/api/v1/usage?group_by=user", "user", 200),
    Route("GET", "/v1/models", "user", 200),
    Route(
        "POST",
        "/v1/chat/completions",
        "user",
        200,
        lambda: {
            "model": "lmstudio/llama-3.2-3b-instruct",
            "messages": [{"role": "user", "content": "hi"}],
        },
    ),
    Route("GET", "/metrics", "public", 200),
]


def expected_status(route: Route, credential: str) -> int:
    if route.access == "public":
        return route.ok
    if credential in REJECTED:
        return 401
    if route.access == "admin" and credential not in ADMINS:
        return 403
    return route.ok


async def _api_key(client: httpx.AsyncClient, user: AppUser) -> str:
    response = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    assert response.status_code == 201
    return str(response.json()["key"])


@pytest.fixture(scope="module")
async def credentials(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> dict[str, dict[str, str]]:
    user = await make_user()
    admin = await make_user(is_superuser=True)
    doomed = await make_user()
    doomed_key = await _api_key(client, doomed)
    revoked = await client.post("/api/v1/api-keys", json={"name": "r"}, headers=user.headers)
    revoke = await client.delete(f"/api/v1/api-keys/{revoked.json()['id']}", headers=user.headers)
    assert revoke.status_code == 204
    deactivate = await client.delete(f"/api/v1/users/{doomed.id}", headers=admin_headers)
    assert deactivate.status_code == 200

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    expired = create_access_token(uuid.UUID(user.id), SECRET_KEY, timedelta(minutes=-1))
    forged = create_access_token(uuid.UUID(admin.id), "x" * 48, timedelta(minutes=5))
    return {
        "none": {},
        "garbage": bearer("not-a-token"),
        "expired": bearer(expired),
        "other_key": bearer(forged),
        "deactivated_jwt": doomed.headers,
        "deactivated_api_key": bearer(doomed_key),
        "user": user.headers,
        "admin": admin.headers,
        "api_key": bearer(await _api_key(client, user)),
        "admin_api_key": bearer(await _api_key(client, admin)),
        "revoked_api_key": bearer(revoked.json()["key"]),
    }


Request = Callable[[Route, dict[str, str]], Awaitable[httpx.Response]]


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_route_answers_expected_status(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    credentials: dict[str, dict[str, str]],
    route: Route,
    credential: str,
) -> None:
    path = route.path
    if "{target}" in path:
        path = path.replace("{target}", (await make_user(log_in=False)).id)
    body = route.body() if route.body else None
    response = await client.request(route.method, path, json=body, headers=credentials[credential])
    assert response.status_code == expected_status(route, credential), response.text
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        assert "detail" in body or "error" in body  # the /v1 facade answers in OpenAI's shape
