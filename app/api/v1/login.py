"""Log in with email and password (OAuth2 password form) for a JWT."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordRequestForm

from app.api.deps import SessionDep, SettingsDep
from app.core.security import create_access_token
from app.models import Token, has_control_characters
from app.services.users import authenticate

router = APIRouter(tags=["login"])


@router.post("/login/access-token")
async def login_access_token(
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange email (as `username`) and password for a Bearer access token."""
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
    user = await authenticate(session, form.username, form.password)
    if user is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="Incorrect email or password")
    if not user.is_active:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="Inactive user")
    token = create_access_token(
        user.id,
        settings.secret_key.get_secret_value(),
        timedelta(minutes=settings.access_token_expire_minutes),
    )
    return Token(access_token=token)
