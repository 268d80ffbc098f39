from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.core.security import (
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
    assert (
        decode_access_token(create_access_token(user_id, KEY, timedelta(minutes=1)), KEY) == user_id
    )


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
