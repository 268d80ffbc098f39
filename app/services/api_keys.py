"""Personal API keys: issued once, stored as a hash, revocable."""

from __future__ import annotations

import uuid

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.security import generate_api_key, hash_api_key
from app.models import ApiKey, ApiKeyCreate, User, utcnow
from app.services.credential_cache import credential_cache, notify_credentials_changed


async def issue_api_key(
    session: AsyncSession, user: User, key_in: ApiKeyCreate
) -> tuple[ApiKey, str]:
    """Create a key for `user`; returns the row and the plaintext key (never stored)."""
    key = generate_api_key()
    row = ApiKey(name=key_in.name, user_id=user.id, prefix=key[:12], key_hash=hash_api_key(key))
    session.add(row)
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


async def revoke_api_key(session: AsyncSession, user: User, key_id: uuid.UUID) -> ApiKey | None:
    """Revoke one of the user's keys; None when the user owns no such key."""
    row = await session.get(ApiKey, key_id)
    if row is None or row.user_id != user.id:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        await notify_credentials_changed(session, user.id)
        await session.commit()
        credential_cache.forget_user(user.id)
        await session.refresh(row)
    return row


async def user_for_api_key(session: AsyncSession, key: str) -> User | None:
    """The owner of an unrevoked key, if any."""
    result = await session.exec(
        select(User)
        .join(ApiKey, col(ApiKey.user_id) == col(User.id))
        .where(ApiKey.key_hash == hash_api_key(key), col(ApiKey.revoked_at).is_(None))
    )
    return result.first()
