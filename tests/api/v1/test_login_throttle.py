"""Login throttling over HTTP: per account, per client, shared state in the database.

Each test speaks for its own client address (X-Forwarded-For from the trusted loopback
peer) so that its failures do not count against other tests' client, 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import httpx
from sqlmodel import col, func, select

from app.core.db import get_sessionmaker
from app.models import LoginThrottle
from app.services import login_throttle
from tests.conftest import LLMEnv, UserFactory

LOGIN = "/api/v1/login/access-token"


def _client_address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def _as_client(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def _attempt(
    client: httpx.AsyncClient, email: str, password: str, address: str
) -> httpx.Response:
    return await client.post(
        LOGIN, data={"username": email, "password": password}, headers=_as_client(address)
    )


def _unknown_email() -> str:
    return f"ghost-{uuid.uuid4().hex[:10]}@example.com"


async def test_an_account_is_locked_after_its_limit_even_for_the_right_password(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_account=3, login_window_seconds=600)
    user = await make_user(log_in=False)
    address = _client_address()
    for _ in range(3):
        assert (await _attempt(client, user.email, "wrong-guess", address)).status_code == 400
    locked = await _attempt(client, user.email.upper(), user.password, address)
    assert locked.status_code == 429
    assert locked.json() == {"detail": "Too many failed login attempts; try again later"}
    assert 500 <= int(locked.headers["Retry-After"]) <= 600
    # The limit is the account's, whichever client asks.
    elsewhere = await _attempt(client, user.email, user.password, _client_address())
    assert elsewhere.status_code == 429


async def test_unknown_accounts_are_throttled_the_same_way(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_account=2)
    user = await make_user(log_in=False)
    address = _client_address()
    real = [await _attempt(client, user.email, "wrong-guess", address) for _ in range(4)]
    ghost_email = _unknown_email()
    ghost = [await _attempt(client, ghost_email, "wrong-guess", address) for _ in range(4)]
    assert [r.status_code for r in real] == [r.status_code for r in ghost] == [400, 400, 429, 429]
    assert [r.json() for r in real] == [r.json() for r in ghost]
    for response in (real[-1], ghost[-1]):  # each counts down from its own first failure
        assert 800 <= int(response.headers["Retry-After"]) <= 900


async def test_a_success_clears_the_accounts_count(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_account=3)
    user = await make_user(log_in=False)
    address = _client_address()
    for _ in range(2):
        assert (await _attempt(client, user.email, "wrong-guess", address)).status_code == 400
    assert (await _attempt(client, user.email, user.password, address)).status_code == 200
    for _ in range(3):  # a fresh allowance
        assert (await _attempt(client, user.email, "wrong-guess", address)).status_code == 400
    assert (await _attempt(client, user.email, user.password, address)).status_code == 429


async def test_concurrent_guesses_get_no_more_checks_than_the_limit(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_account=5)
    user = await make_user(log_in=False)
    address = _client_address()
    guesses = [f"wrong-guess-{n}" for n in range(40)]
    responses = await asyncio.gather(
        *(_attempt(client, user.email, guess, address) for guess in guesses)
    )
    statuses = [r.status_code for r in responses]
    # 5 passwords were checked, 35 refused unchecked; and now the right one is refused too.
    assert sorted(statuses) == [400] * 5 + [429] * 35, statuses
    assert (await _attempt(client, user.email, user.password, address)).status_code == 429


async def test_a_client_is_limited_across_accounts_and_others_are_not(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_client=4, login_max_failures_per_account=100)
    user = await make_user(log_in=False)
    spraying = _client_address()
    for _ in range(4):
        assert (await _attempt(client, _unknown_email(), "guess", spraying)).status_code == 400
    refused = await _attempt(client, user.email, user.password, spraying)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    # The account itself is not locked: another client logs in.
    assert (await _attempt(client, user.email, user.password, _client_address())).status_code == 200


async def test_successful_logins_do_not_use_up_the_clients_allowance(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_client=2)
    user = await make_user(log_in=False)
    address = _client_address()
    for _ in range(4):
        assert (await _attempt(client, user.email, user.password, address)).status_code == 200


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(
    app_url: str, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_client=3, login_max_failures_per_account=100)
    # 127.0.0.2 is not in FORWARDED_ALLOW_IPS: its X-Forwarded-For is a lie we ignore.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=app_url, transport=transport) as untrusted:
        statuses = [
            (await _attempt(untrusted, _unknown_email(), "guess", _client_address())).status_code
            for _ in range(5)
        ]
    assert statuses == [400, 400, 400, 429, 429]


async def test_the_window_ends(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_account=1, login_window_seconds=60)
    user = await make_user(log_in=False)
    address = _client_address()
    assert (await _attempt(client, user.email, "wrong-guess", address)).status_code == 400
    locked = await _attempt(client, user.email, user.password, address)
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 60
    # Time passes (moved on in the database rather than waited for).
    async with get_sessionmaker()() as session:
        row = await session.get(LoginThrottle, f"account:{user.email}")
        assert row is not None
        row.window_ends_at = time.time() - 1
        await session.commit()
    assert (await _attempt(client, user.email, user.password, address)).status_code == 200


async def test_a_limit_of_zero_is_off(
    client: httpx.AsyncClient, make_user: UserFactory, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_account=0, login_max_failures_per_client=0)
    user = await make_user(log_in=False)
    address = _client_address()
    for _ in range(4):
        assert (await _attempt(client, user.email, "wrong-guess", address)).status_code == 400
    assert (await _attempt(client, user.email, user.password, address)).status_code == 200


async def _rows(*keys: str) -> dict[str, LoginThrottle]:
    async with get_sessionmaker()() as session:
        found = await session.exec(select(LoginThrottle).where(col(LoginThrottle.key).in_(keys)))
        return {row.key: row for row in found.all()}


async def test_a_hostile_username_never_becomes_a_row(
    client: httpx.AsyncClient, llm_env: LLMEnv
) -> None:
    llm_env.set(login_max_failures_per_client=50)
    address = _client_address()
    huge = "A" * 100_000 + "@example.com"
    response = await _attempt(client, huge, "guess", address)
    assert response.status_code == 400
    assert response.json() == {"detail": "Incorrect email or password"}
    async with get_sessionmaker()() as session:
        longest = (await session.exec(select(func.max(func.length(LoginThrottle.key))))).one()
    assert longest is not None
    assert longest <= 300
    # It still counted against the client, which is stored as a validated address.
    rows = await _rows(f"client:{address}")
    assert rows[f"client:{address}"].attempts == 1
    garbage = await client.post(
        LOGIN,
        data={"username": "x@example.com", "password": "guess"},
        headers=_as_client("not-an-ip'; drop table user"),
    )
    assert garbage.status_code == 400
    async with get_sessionmaker()() as session:
        keys = (await session.exec(select(LoginThrottle.key))).all()
    assert "client:unknown" in keys
    assert not any("not-an-ip" in key for key in keys)


async def test_keys_are_normalised_and_passwords_never_stored(
    client: httpx.AsyncClient, llm_env: LLMEnv
) -> None:
    email = _unknown_email()
    address = _client_address()
    for variant in (email, email.upper(), email.title()):
        assert (await _attempt(client, variant, "s3cret-guess", address)).status_code == 400
    rows = await _rows(f"account:{email}", f"client:{address}")
    assert rows[f"account:{email}"].attempts == 3
    assert rows[f"client:{address}"].attempts == 3
    async with get_sessionmaker()() as session:
        keys = (await session.exec(select(LoginThrottle.key))).all()
    assert not any("s3cret" in key for key in keys)


async def test_ended_windows_are_pruned(client: httpx.AsyncClient, llm_env: LLMEnv) -> None:
    async with get_sessionmaker()() as session:
        for n in range(3):
            session.add(LoginThrottle(key=f"account:old-{n}", attempts=9, window_ends_at=1.0))
        await session.commit()
    login_throttle._last_prune = float("-inf")  # due now
    assert (await _attempt(client, _unknown_email(), "x", _client_address())).status_code == 400
    assert await _rows(*(f"account:old-{n}" for n in range(3))) == {}


async def test_a_prune_is_bounded_and_keeps_live_windows(database_url: str) -> None:
    prefix = f"account:prune-{uuid.uuid4().hex[:8]}"
    async with get_sessionmaker()() as session:
        for n in range(5):
            session.add(LoginThrottle(key=f"{prefix}-{n}", attempts=1, window_ends_at=2.0))
        session.add(LoginThrottle(key=f"{prefix}-live", attempts=1, window_ends_at=4e9))
        await session.commit()
        assert await login_throttle.prune(session, now=3.0, batch=3) == 3
        assert await login_throttle.prune(session, now=3.0) == 2
    assert list(await _rows(*(f"{prefix}-{n}" for n in [*range(5), "live"]))) == [f"{prefix}-live"]
