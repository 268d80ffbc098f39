from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from app.core.security import (
    AccessClaims,
    InvalidTokenError,
    create_access_token,
    decode_access_token,
    generate_api_key,
    hash_api_key,
    hash_password,
    looks_like_api_key,
    verify_password,
)

KEY = "k" * 40


async def test_password_hash_is_argon2_and_verifies() -> None:
    hashed = await hash_password("hunter22")
    assert hashed.startswith("$argon2id$")
    assert await verify_password("hunter22", hashed)
    assert not await verify_password("hunter23", hashed)
    assert not await verify_password("hunter22", None)


def test_token_round_trip() -> None:
    user_id = uuid.uuid4()
    token = create_access_token(user_id, KEY, timedelta(minutes=1), version=7)
    assert decode_access_token(token, KEY) == AccessClaims(user_id, 7)


def test_a_token_without_a_version_is_version_0() -> None:
    user_id = uuid.uuid4()
    exp = datetime.now(UTC) + timedelta(minutes=1)
    old = jwt.encode({"sub": str(user_id), "exp": exp, "type": "access"}, KEY, "HS256")
    assert decode_access_token(old, KEY) == AccessClaims(user_id, 0)


@pytest.mark.parametrize("version", ["1", 1.0, True, None, [1]])
def test_a_version_that_is_not_an_integer_is_refused(version: object) -> None:
    exp = datetime.now(UTC) + timedelta(minutes=1)
    claims = {"sub": str(uuid.uuid4()), "exp": exp, "type": "access", "ver": version}
    with pytest.raises(InvalidTokenError, match="Could not validate"):
        decode_access_token(jwt.encode(claims, KEY, "HS256"), KEY)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (create_access_token(uuid.uuid4(), KEY, timedelta(seconds=-1)), "Token has expired"),
        (create_access_token(uuid.uuid4(), "x" * 40, timedelta(minutes=1)), "Could not validate"),
        ("garbage", "Could not validate"),
    ],
)
def test_bad_tokens_are_rejected_with_reason(token: str, reason: str) -> None:
    with pytest.raises(InvalidTokenError, match=reason):
        decode_access_token(token, KEY)


def test_api_keys_are_random_and_hashed() -> None:
    first, second = generate_api_key(), generate_api_key()
    assert first != second
    assert looks_like_api_key(first)
    assert len(hash_api_key(first)) == 64
    assert hash_api_key(first) != hash_api_key(second)
