"""Log in with email and password (OAuth2 password form) for a JWT."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordRequestForm

from app.api.deps import SessionDep, SettingsDep, admit_login_attempt
from app.core.config import Settings
from app.core.security import create_access_token
from app.models import Token, User, has_control_characters
from app.services import login_throttle
from app.services.users import authenticate

router = APIRouter(tags=["login"])


def issue_token(user: User, settings: Settings) -> Token:
    """A Bearer access token for `user`, valid until it expires or their sessions end."""
    token = create_access_token(
        user.id,
        settings.secret_key.get_secret_value(),
        timedelta(minutes=settings.access_token_expire_minutes),
        version=user.token_version,
    )
    return Token(access_token=token)


@router.post(
    "/login/access-token",
    responses={429: {"description": "Too many failed attempts; see Retry-After"}},
)
async def login_access_token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange email (as `username`) and password for a Bearer access token.

    Failed attempts are limited per account and per client (429 with Retry-After)."""
    if has_control_characters(form.username):  # never sent to the database (NUL breaks it)
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "username"),
                    "msg": "must not contain control characters",
                    "type": "value_error",
                }
            ]
        )
    ticket = await admit_login_attempt(session, settings, request, form.username)
    user = await authenticate(session, form.username, form.password)
    if user is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="Incorrect email or password")
    await login_throttle.succeeded(session, ticket)
    if not user.is_active:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="Inactive user")
    return issue_token(user, settings)
