"""Dependencies every router shares, declared once as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import OAuth2PasswordBearer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.config import Settings, get_settings
from app.core.db import get_session, get_sessionmaker
from app.core.security import InvalidTokenError, decode_access_token, looks_like_api_key
from app.models import User
from app.services.api_keys import user_for_api_key
from app.services.llm import LLMService, get_llm_service
from app.services.users import get_user

SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/login/access-token", auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def get_current_user(
    settings: SettingsDep,
    token: Annotated[str | None, Depends(_bearer)],
) -> User:
    """The active user behind a Bearer JWT or API key; 401 otherwise.

    Uses a session of its own, closed before the route runs, so that a long LLM call or
    stream does not hold a pooled database connection for its whole length.
    """
    if not token:
        raise _unauthorized("Not authenticated")
    async with get_sessionmaker()() as session:
        return await _user_for_token(session, settings, token)


async def _user_for_token(session: AsyncSession, settings: Settings, token: str) -> User:
    if looks_like_api_key(token):
        user = await user_for_api_key(session, token)
        if user is None:
            raise _unauthorized("Invalid or revoked API key")
    else:
        try:
            user_id = decode_access_token(token, settings.secret_key.get_secret_value())
        except InvalidTokenError as exc:
            raise _unauthorized(str(exc)) from exc
        user = await get_user(session, user_id)
        if user is None:
            raise _unauthorized("Could not validate credentials")
    if not user.is_active:
        raise _unauthorized("Inactive user")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def require_admin(user: CurrentUser) -> User:
    """The current user if they are an admin; 403 otherwise."""
    if not user.is_superuser:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail="Admin privileges required"
        )
    return user


AdminUser = Annotated[User, Depends(require_admin)]


LLMServiceDep = Annotated[LLMService, Depends(get_llm_service)]
