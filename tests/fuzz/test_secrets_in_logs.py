"""Everything the app logged at DEBUG during the whole fuzz tier holds no secret.

The fuzz app logs every logger (the app's, uvicorn's, the OpenAI SDK's, aiohttp's, ...) at
DEBUG to a file (tests/running_app.py). This module runs after test_openapi.py and
test_regressions.py (pytest orders files by name), adds the flows that carry secrets on
purpose, and then reads the whole file: no password, password hash, API key, JWT, upstream
key or Authorization header may appear in it.
"""

from __future__ import annotations

import asyncio
import re

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.running_app import RunningApp

NEW_PASSWORD = "a-brand-new-password-42"
WRONG_PASSWORD = "wrong-password-never-logged"


async def _hashes_and_audit_trail(database_url: str) -> tuple[list[str], str]:
    """Every stored password and key hash, and the whole audit trail as text."""
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database, timeout=5
    )
    try:
        rows = await conn.fetch('SELECT hashed_password FROM "user"')
        keys = await conn.fetch("SELECT * FROM apikey")
        events = await conn.fetch("SELECT * FROM auditevent")
    finally:
        await conn.close()
    values = [row["hashed_password"] for row in rows]
    for row in keys:  # whatever the key table stores about a key (its hash, its prefix)
        values += [str(v) for k, v in row.items() if "hash" in k and v]
    return values, "\n".join(str(dict(row)) for row in events)


def _secret_flows(app: RunningApp) -> list[str]:
    """Log in (right and wrong), create a user, change a password, make and use an API key,
    call the LLM routes with a key and a JWT; returns the secrets these flows minted."""
    minted = [NEW_PASSWORD, WRONG_PASSWORD]
    with httpx.Client(base_url=app.url, timeout=30) as client:
        admin = app.admin.headers
        client.post(
            "/api/v1/login/access-token",
            data={"username": app.admin.email, "password": WRONG_PASSWORD},
        )
        created = client.post(
            "/api/v1/users",
            json={"email": "logs@example.com", "password": "first-password-1"},
            headers=admin,
        )
        minted.append("first-password-1")
        user_id = created.json()["id"]
        client.patch(f"/api/v1/users/{user_id}", json={"password": NEW_PASSWORD}, headers=admin)
        login = client.post(
            "/api/v1/login/access-token",
            data={"username": "logs@example.com", "password": NEW_PASSWORD},
        )
        token = login.json()["access_token"]
        minted.append(token)
        bearer = {"Authorization": f"Bearer {token}"}
        key = client.post("/api/v1/api-keys", json={"name": "logs"}, headers=bearer).json()["key"]
        minted.append(key)
        as_key = {"Authorization": f"Bearer {key}"}
        client.post("/api/v1/llm/generate", json={"prompt": "hello"}, headers=as_key)
        client.post("/api/v1/llm/stream", json={"prompt": "hello"}, headers=bearer)
        client.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
            headers=as_key,
        )
        client.get("/api/v1/users/me", headers={"Authorization": "Bearer not-a-valid-token-xyz"})
        minted.append("not-a-valid-token-xyz")
    return minted


def test_no_secret_in_debug_logs_or_the_audit_trail(fuzz_app: RunningApp) -> None:
    minted = _secret_flows(fuzz_app)
    hashes, trail = asyncio.run(_hashes_and_audit_trail(fuzz_app.database_url))
    # The fuzz tier changed users and keys: the trail has their events, and none holds a
    # secret of the flows above or any stored hash.
    assert "password changed" in trail
    assert "api_key.create" in trail
    in_trail = [s[:6] + "…" for s in [*fuzz_app.secrets, *minted, *hashes] if s in trail]
    assert not in_trail, f"secrets in the audit trail (first characters shown): {in_trail}"
    assert "$argon2" not in trail
    text = fuzz_app.log_text()
    # The capture works: DEBUG lines from the app and from the libraries under it.
    assert "DEBUG:app." in text, text[:2000]
    assert re.search(r"^DEBUG:(?!app\.)\w", text, re.MULTILINE), text[:2000]
    leaked = [
        secret[:6] + "…" for secret in [*fuzz_app.secrets, *minted, *hashes] if secret in text
    ]
    assert not leaked, f"secrets in the log (first characters shown): {leaked}"
    for pattern in (r"(?i)authorization['\"]?\s*[:=]", r"(?i)bearer\s+[\w.~+/-]{8,}", r"\$argon2"):
        found = re.search(pattern, text)
        if found is not None:  # show where, without printing the secret itself
            context = text[max(0, found.start() - 300) : found.end() + 100]
            masked = re.sub(r"[\w$+/=.-]{20,}", "…", context)
            pytest.fail(f"{pattern} in the log: {masked}")
