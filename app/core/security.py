"""Password hashing (argon2 via pwdlib), JWT access tokens (PyJWT) and API keys."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

import anyio
import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "lmb_"

_password_hash = PasswordHash((Argon2Hasher(),))


@cache
def _dummy_hash() -> str:
    # Verified against when the email is unknown, so both paths cost one argon2 verify.
    return _password_hash.hash(secrets.token_urlsafe(16))


class InvalidTokenError(Exception):
    """A bearer token that is malformed, expired or signed with another key."""


async def hash_password(password: str) -> str:
    """Argon2id hash of `password`, computed off the event loop (it takes ~0.1 s of CPU)."""
    return await anyio.to_thread.run_sync(_password_hash.hash, password)


async def verify_password(password: str, hashed: str | None) -> bool:
    """True when `password` matches `hashed`; takes the same time when `hashed` is None.

    Runs off the event loop, so a login does not stall streams in flight."""
    if hashed is None:
        await anyio.to_thread.run_sync(_password_hash.verify, password, _dummy_hash())
        return False
    return await anyio.to_thread.run_sync(_password_hash.verify, password, hashed)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says: whose it is and which of their sessions."""

    user_id: uuid.UUID
    version: int  # the user's token_version when it was issued


def create_access_token(
    user_id: uuid.UUID, secret_key: str, expires: timedelta, *, version: int = 0
) -> str:
    """A signed JWT whose subject is the user's id and `ver` their token_version."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "ver": version,
        "iat": now,
        "exp": now + expires,
        "type": "access",
    }
    return jwt.encode(claims, secret_key, algorithm=JWT_ALGORITHM)


def decode_access_token(token: str, secret_key: str) -> AccessClaims:
    """The claims of a valid token; raises InvalidTokenError with the reason otherwise.

    A token without `ver` (issued before sessions had versions) counts as version 0."""
    try:
        claims = jwt.decode(
            token,
            secret_key,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidTokenError("Token has expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("Could not validate credentials") from exc
    version = claims.get("ver", 0)
    if claims.get("type") != "access" or type(version) is not int:
        raise InvalidTokenError("Could not validate credentials")
    try:
        return AccessClaims(uuid.UUID(str(claims["sub"])), version)
    except ValueError as exc:
        raise InvalidTokenError("Could not validate credentials") from exc


def generate_api_key() -> str:
    """A new random API key; shown to its owner once, stored only as a hash."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 of the key: keys are 256 random bits, so a fast hash is safe and O(1) to look up."""
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    """True for tokens shaped like our API keys (so they are not parsed as JWTs)."""
    return token.startswith(API_KEY_PREFIX)
