"""The current user, and admin-only user management."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status

from app.api.deps import (
    AdminUser,
    CurrentUser,
    SessionDep,
    SettingsDep,
    admit_login_attempt,
    require_admin,
)
from app.api.paging import Limit, Skip
from app.api.v1.login import issue_token
from app.models import (
    ApiKeyPublic,
    AuditAction,
    Token,
    UpdatePassword,
    User,
    UserCreate,
    UserPublic,
    UsersPublic,
    UserUpdate,
)
from app.services import login_throttle
from app.services import users as user_service
from app.services.api_keys import list_api_keys

router = APIRouter(prefix="/users", tags=["users"])

_EMAIL_TAKEN = "A user with this email already exists"


@router.get("/me")
async def read_me(user: CurrentUser) -> UserPublic:
    """The authenticated user."""
    return UserPublic.model_validate(user)


@router.patch(
    "/me/password",
    responses={429: {"description": "Too many wrong current passwords; see Retry-After"}},
)
async def change_my_password(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    me: CurrentUser,
    body: UpdatePassword,
) -> Token:
    """Change your own password, giving the current one.

    Every session started before (other devices included) ends; the response carries a new
    token for this one. API keys keep working: revoke them under /api-keys if need be. Wrong
    current passwords count toward the login limits (429 with Retry-After)."""
    ticket = await admit_login_attempt(session, settings, request, me.email)
    user = await user_service.get_user(session, me.id)  # fresh: the cached row is shared
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Could not validate credentials")
    changed = await user_service.change_password(
        session, user, body.current_password, body.new_password
    )
    if changed is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="Incorrect current password")
    await login_throttle.succeeded(session, ticket)
    return issue_token(changed, settings)


@router.get("", dependencies=[Depends(require_admin)])
async def list_users(
    session: SessionDep,
    skip: Skip = 0,
    limit: Limit = 100,
) -> UsersPublic:
    """A page of users (admin only)."""
    rows, count = await user_service.list_users(session, skip, limit)
    return UsersPublic(data=[UserPublic.model_validate(u) for u in rows], count=count)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(session: SessionDep, admin: AdminUser, user_in: UserCreate) -> UserPublic:
    """Create a user (admin only); 409 if the email is taken."""
    if await user_service.get_user_by_email(session, user_in.email) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=_EMAIL_TAKEN)
    return UserPublic.model_validate(await user_service.create_user(session, user_in, actor=admin))


async def _existing_user(session: SessionDep, user_id: uuid.UUID) -> User:
    user = await user_service.get_user(session, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="User not found")
    return user


@router.get("/{user_id}/api-keys", dependencies=[Depends(require_admin)])
async def list_user_api_keys(
    session: SessionDep,
    user: Annotated[User, Depends(_existing_user)],
    skip: Skip = 0,
    limit: Limit = 100,
) -> list[ApiKeyPublic]:
    """A page of a user's API keys, newest first, revoked ones included (admin only)."""
    rows = await list_api_keys(session, user, skip, limit)
    return [ApiKeyPublic.model_validate(k) for k in rows]


@router.get("/{user_id}", dependencies=[Depends(require_admin)])
async def read_user(user: Annotated[User, Depends(_existing_user)]) -> UserPublic:
    """One user (admin only)."""
    return UserPublic.model_validate(user)


@router.patch("/{user_id}")
async def update_user(
    session: SessionDep,
    admin: AdminUser,
    user: Annotated[User, Depends(_existing_user)],
    user_in: UserUpdate,
) -> UserPublic:
    """Update a user (admin only): rename, reset password, (de)activate, grant admin, set
    their `policy` (null removes it; it bounds their JWT calls and every key of theirs).

    A new password or a deactivation ends the user's sessions (their access tokens stop
    working, and reactivation does not revive them); a deactivation also revokes their
    API keys."""
    if user.id == admin.id and (user_in.is_active is False or user_in.is_superuser is False):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail="Admins cannot deactivate or demote themselves"
        )
    email_changes = user_in.email is not None and user_in.email.lower() != user.email.lower()
    if email_changes and await user_service.get_user_by_email(session, str(user_in.email)):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=_EMAIL_TAKEN)
    return UserPublic.model_validate(
        await user_service.update_user(session, user, user_in, actor=admin)
    )


@router.delete("/{user_id}")
async def deactivate_user(
    session: SessionDep,
    admin: AdminUser,
    user: Annotated[User, Depends(_existing_user)],
) -> UserPublic:
    """Deactivate a user (admin only); their tokens and API keys stop working for good."""
    if user.id == admin.id:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail="Admins cannot deactivate themselves"
        )
    return UserPublic.model_validate(
        await user_service.update_user(
            session,
            user,
            UserUpdate(is_active=False),
            actor=admin,
            action=AuditAction.USER_DEACTIVATE,
        )
    )
