"""Dependencies every router shares, declared once as `Annotated` aliases."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.config import Settings, get_settings
from app.core.db import get_session, get_sessionmaker
from app.core.security import (
    InvalidTokenError,
    decode_access_token,
    hash_api_key,
    looks_like_api_key,
)
from app.models import User
from app.services import login_throttle
from app.services.api_keys import owner_of_api_key
from app.services.credential_cache import credential_cache
from app.services.key_usage import KeyFacts, key_usage
from app.services.llm import LLMService, get_llm_service
from app.services.llm.ledger import set_caller
from app.services.llm.policy import Scope, scope_of
from app.services.login_throttle import LoginLimits, Ticket, TooManyAttempts
from app.services.users import get_user

logger = logging.getLogger("app.api")

SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def _settings() -> Settings:
    # An async def: FastAPI runs a plain def dependency in its thread pool, one hop per request.
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]

_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/login/access-token", auto_error=False)
BearerToken = Annotated[str | None, Depends(_bearer)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def authenticate(settings: Settings, token: str | None, *, cached: bool) -> User:
    """The active user behind a Bearer JWT or API key; 401 otherwise.

    The JWT's signature and expiry are checked on every call, and its `ver` against the
    user's token_version; with `cached`, the user row may come from the worker's credential
    cache (see `app.services.credential_cache`), so that check costs no database read.
    A database read uses a session of its own, closed before the route runs, so that a
    long LLM call or stream does not hold a pooled database connection.
    """
    if not token:
        raise _unauthorized("Not authenticated")
    is_api_key = looks_like_api_key(token)
    if is_api_key:
        key_hash = hash_api_key(token)
        key = f"key:{key_hash}"
    else:
        try:
            claims = decode_access_token(token, settings.secret_key.get_secret_value())
        except InvalidTokenError as exc:
            raise _unauthorized(str(exc)) from exc
        user_id = claims.user_id
        key = f"user:{user_id}"

    async def load() -> User | None:
        async with get_sessionmaker()() as session:
            if is_api_key:
                owner = await owner_of_api_key(session, token)
                if owner is None:
                    return None
                scope = scope_of(owner.policy, f"API key {owner.name!r}", f"k:{owner.key_id.hex}")
                key_usage.remember(key_hash, KeyFacts(owner.key_id, owner.expires_at, scope))
                return owner.user
            return await get_user(session, user_id)

    ttl = settings.auth_cache_seconds
    user = await (credential_cache.resolve(key, ttl, load) if cached else load())
    if user is None:
        raise _unauthorized(
            "Invalid or revoked API key" if is_api_key else "Could not validate credentials"
        )
    if not user.is_active:
        raise _unauthorized("Inactive user")
    key_id = None
    key_scope: Scope | None = None
    if is_api_key:
        facts = key_usage.facts(key_hash)
        if facts is None:  # dropped from the bounded table while the user stayed cached
            user = await load()
            facts = key_usage.facts(key_hash)
            if user is None or facts is None:
                raise _unauthorized("Invalid or revoked API key")
        if facts.expired():
            raise _unauthorized("API key expired")
        key_usage.used(facts.key_id)
        key_id, key_scope = facts.key_id, facts.scope
    if not is_api_key and claims.version != user.token_version:
        # The password changed or the user was deactivated after this token was issued.
        raise _unauthorized("Session ended (password changed or account deactivated)")
    if key_scope is None and user.policy is None:  # most callers: no policy, nothing to do
        set_caller(user.id, key_id)  # the usage ledger's caller for this request's LLM calls
    else:
        user_scope = scope_of(user.policy, f"user {user.email!r}", f"u:{user.id.hex}")
        set_caller(user.id, key_id, tuple(s for s in (key_scope, user_scope) if s is not None))
    return user


async def get_current_user(request: Request, settings: SettingsDep, token: BearerToken) -> User:
    """The authenticated user (credential cache allowed); 401 otherwise. Kept on
    `request.state.user` for error handlers (see `caller_is_admin`)."""
    request.state.user = user = await authenticate(settings, token, cached=True)
    return user


def caller_is_admin(request: Request) -> bool:
    """True if this request's authenticated caller is an admin (error handlers show admins
    the upstream's address, which other users do not see)."""
    user = getattr(request.state, "user", None)
    return isinstance(user, User) and user.is_superuser


async def current_user_of(request: Request) -> User:
    """`get_current_user` with its own dependencies resolved here, for the routes served
    without FastAPI's dependency solving (`app.api.direct_routes`)."""
    return await get_current_user(request, get_settings(), await _bearer(request))


CurrentUser = Annotated[User, Depends(get_current_user)]


async def require_admin(settings: SettingsDep, token: BearerToken) -> User:
    """The current user, read fresh from the database, if an admin; 401/403 otherwise.

    Admin routes are rare and powerful, so a demotion or deactivation made by another
    worker applies to them at once rather than after the credential cache expires.
    """
    user = await authenticate(settings, token, cached=False)
    if not user.is_superuser:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail="Admin privileges required"
        )
    return user


AdminUser = Annotated[User, Depends(require_admin)]


async def admit_login_attempt(
    session: AsyncSession, settings: Settings, request: Request, username: str
) -> Ticket:
    """Count a password attempt on `username` from the request's client; 429 when past a limit.

    The client is `request.client`: behind a proxy, the address uvicorn took from
    X-Forwarded-For if the proxy is in FORWARDED_ALLOW_IPS (see `python -m app serve`)."""
    try:
        return await login_throttle.admit(
            session,
            LoginLimits.from_settings(settings),
            username=username,
            client_host=request.client.host if request.client else None,
        )
    except TooManyAttempts as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="Too many failed login attempts; try again later",
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    except (SQLAlchemyError, OSError) as exc:
        # Fail closed: an attempt that cannot be counted is not checked. The error's text
        # may quote the username, so only its type is logged.
        logger.warning("login attempt not counted: %s", type(exc).__name__)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="Login is unavailable: the database cannot be reached or is not migrated "
            "(run `python -m app migrate`)",
        ) from exc


LLMServiceDep = Annotated[LLMService, Depends(get_llm_service)]
