"""Personal API keys: issued once, stored as a hash, revocable, optionally expiring."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.security import generate_api_key, hash_api_key
from app.models import ApiKey, ApiKeyCreate, AuditAction, AuditTarget, User, utcnow
from app.services import audit
from app.services.credential_cache import credential_cache, notify_credentials_changed


async def issue_api_key(
    session: AsyncSession, user: User, key_in: ApiKeyCreate, *, actor: User | None = None
) -> tuple[ApiKey, str]:
    """Create a key for `user` (audited, as done by `actor`); returns the row and the
    plaintext key (never stored)."""
    key = generate_api_key()
    row = ApiKey(
        name=key_in.name,
        user_id=user.id,
        prefix=key[:12],
        key_hash=hash_api_key(key),
        expires_at=key_in.expires_at,
    )
    session.add(row)
    fields = ("name", "user_id", "prefix", "expires_at")
    changes = audit.diff({}, row.model_dump(include=set(fields)), fields)
    audit.record(session, actor, AuditAction.API_KEY_CREATE, AuditTarget.API_KEY, row.id, changes)
    await session.commit()
    await session.refresh(row)
    return row, key


async def list_api_keys(
    session: AsyncSession, user: User, skip: int = 0, limit: int | None = None
) -> list[ApiKey]:
    """A page of the user's keys, newest first, revoked ones included."""
    result = await session.exec(
        select(ApiKey)
        .where(ApiKey.user_id == user.id)
        .order_by(col(ApiKey.created_at).desc(), col(ApiKey.id))
        .offset(skip)
        .limit(limit)
    )
    return list(result.all())


async def revoke_api_key(
    session: AsyncSession, user: User, key_id: uuid.UUID, *, actor: User | None = None
) -> ApiKey | None:
    """Revoke one of the user's keys (audited when it was live); None when the user owns
    no such key."""
    row = await session.get(ApiKey, key_id)
    if row is None or row.user_id != user.id:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        changes = {"revoked_at": [None, row.revoked_at.isoformat()]}
        audit.record(
            session, actor, AuditAction.API_KEY_REVOKE, AuditTarget.API_KEY, key_id, changes
        )
        await notify_credentials_changed(session, user.id)
        await session.commit()
        credential_cache.forget_user(user.id)
        await session.refresh(row)
    return row


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """An unrevoked key's owner, and what the request path needs to know of the key."""

    user: User
    key_id: uuid.UUID
    expires_at: float | None  # Unix seconds
    name: str = ""
    policy: dict[str, Any] | None = None


async def owner_of_api_key(session: AsyncSession, key: str) -> KeyOwner | None:
    """The owner of an unrevoked key (expired or not: the caller says which), if any."""
    result = await session.exec(
        select(User, ApiKey)
        .join(ApiKey, col(ApiKey.user_id) == col(User.id))
        .where(ApiKey.key_hash == hash_api_key(key), col(ApiKey.revoked_at).is_(None))
    )
    found = result.first()
    if found is None:
        return None
    user, row = found
    expires = row.expires_at.timestamp() if row.expires_at else None
    return KeyOwner(user, row.id, expires, row.name, row.policy)


async def user_for_api_key(session: AsyncSession, key: str) -> User | None:
    """The owner of an unrevoked key, if any (expired or not)."""
    owner = await owner_of_api_key(session, key)
    return owner.user if owner else None
