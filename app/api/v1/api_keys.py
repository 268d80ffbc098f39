"""The current user's personal API keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Response, status

from app.api.deps import CurrentUser, SessionDep
from app.api.paging import Limit, Skip
from app.models import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from app.services import api_keys as key_service

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
