"""The current user's personal API keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Response, status

from app.api.deps import AdminUser, CurrentUser, SessionDep
from app.api.paging import Limit, Skip
from app.models import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyDetail,
    ApiKeyPublic,
    PolicyUpdate,
    User,
)
from app.services import api_keys as key_service
from app.services import policies

router = APIRouter(prefix="/api-keys", tags=["api-keys"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    session: SessionDep, user: CurrentUser, key_in: ApiKeyCreate
) -> ApiKeyCreated:
    """Issue a key, optionally expiring (`expires_at`, at most 5 years ahead). The response
    is the only time the key itself is shown."""
    row, key = await key_service.issue_api_key(session, user, key_in, actor=user)
    return ApiKeyCreated.model_validate(row, update={"key": key})


@router.get("")
async def list_api_keys(
    session: SessionDep, user: CurrentUser, skip: Skip = 0, limit: Limit = 100
) -> list[ApiKeyPublic]:
    """A page of the current user's keys, newest first (without the keys themselves)."""
    rows = await key_service.list_api_keys(session, user, skip, limit)
    return [ApiKeyPublic.model_validate(k) for k in rows]


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(session: SessionDep, user: CurrentUser, key_id: uuid.UUID) -> Response:
    """Revoke a key; it stops working immediately."""
    if await key_service.revoke_api_key(session, user, key_id, actor=user) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="API key not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _detail(session: SessionDep, row: ApiKey) -> ApiKeyDetail:
    owner = await session.get(User, row.user_id)
    effective = policies.effective(owner.policy if owner else None, row.policy)
    return ApiKeyDetail.model_validate(row, update={"effective_policy": effective})


async def _key(session: SessionDep, user: User, key_id: uuid.UUID) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None or (row.user_id != user.id and not user.is_superuser):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="API key not found")
    return row


@router.get("/{key_id}")
async def read_api_key(session: SessionDep, user: CurrentUser, key_id: uuid.UUID) -> ApiKeyDetail:
    """One key (yours; an admin may read anyone's), with its policy and `effective_policy`:
    the key's policy within its user's, which is what its calls are held to."""
    return await _detail(session, await _key(session, user, key_id))


@router.patch("/{key_id}")
async def set_api_key_policy(
    session: SessionDep, admin: AdminUser, key_id: uuid.UUID, body: PolicyUpdate
) -> ApiKeyDetail:
    """Set a key's policy (admin only; `{"policy": null}` removes it). It applies to the
    key's next call on every worker, and is audited."""
    row = await _key(session, admin, key_id)
    await policies.set_key_policy(session, row, body.policy, actor=admin)
    return await _detail(session, row)
