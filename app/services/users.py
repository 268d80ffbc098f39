"""Users: creation, lookup, authentication and the first admin."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.config import DEFAULT_SUPERUSER_PASSWORD, Settings
from app.core.security import hash_password, verify_password
from app.models import (
    MAX_EMAIL_LENGTH,
    ApiKey,
    AuditAction,
    AuditTarget,
    User,
    UserCreate,
    UserUpdate,
    utcnow,
)
from app.services import audit, policies
from app.services.credential_cache import credential_cache, notify_credentials_changed

logger = logging.getLogger(__name__)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    """The user with this email (stored lower-cased, so matched case-insensitively), if any."""
    result = await session.exec(select(User).where(User.email == email.lower()))
    return result.first()


# What the audit trail records of a user (the password only as "password changed").
AUDITED_FIELDS = ("email", "full_name", "is_active", "is_superuser", "policy")


def _audited(user: User) -> dict[str, object]:
    return {name: getattr(user, name) for name in AUDITED_FIELDS}


async def create_user(
    session: AsyncSession, user_in: UserCreate, *, actor: User | None = None
) -> User:
    """Insert a user with an argon2 hash of their password (audited, as done by `actor`)."""
    user = User.model_validate(
        user_in.model_dump(exclude={"password"}),
        update={"hashed_password": await hash_password(user_in.password)},
    )
    session.add(user)
    changes = audit.diff({}, _audited(user), AUDITED_FIELDS)
    audit.record(session, actor, AuditAction.USER_CREATE, AuditTarget.USER, user.id, changes)
    await session.commit()
    await session.refresh(user)
    return user


async def update_user(
    session: AsyncSession,
    user: User,
    user_in: UserUpdate,
    *,
    actor: User | None = None,
    action: AuditAction = AuditAction.USER_UPDATE,
) -> User:
    """Apply the fields set in `user_in`, re-hashing a new password; one audit event
    (`action`, by `actor`) records what changed, in the same transaction.

    A new password or a deactivation ends every session: the user's token_version is
    bumped, so access tokens issued before it are refused (reactivation does not revive
    them). A deactivation also revokes the user's API keys; a password change does not
    (keys are credentials of their own, listed and revoked one by one, as on GitHub).
    Every worker is told to drop its cached credentials of this user.
    """
    data = user_in.model_dump(exclude_unset=True)
    if "policy" in data:
        data["policy"] = policies.stored(user_in.policy)
    password = data.pop("password", None)
    deactivating = data.get("is_active") is False and user.is_active
    if password is not None:
        data["hashed_password"] = await hash_password(password)
    before = _audited(user)
    user.sqlmodel_update(data)
    session.add(user)
    changes = audit.diff(before, _audited(user), AUDITED_FIELDS)
    if password is not None:
        changes["password"] = [None, audit.PASSWORD_CHANGED]
    audit.record(session, actor, action, AuditTarget.USER, user.id, changes)
    if password is not None or deactivating:
        # Incremented in SQL, so two concurrent changes both move the version on.
        await session.exec(
            update(User)
            .where(col(User.id) == user.id)
            .values(token_version=col(User.token_version) + 1)
            .execution_options(synchronize_session=False)
        )
    if deactivating:
        await session.exec(
            update(ApiKey)
            .where(col(ApiKey.user_id) == user.id, col(ApiKey.revoked_at).is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    await notify_credentials_changed(session, user.id)
    await session.commit()
    credential_cache.forget_user(user.id)
    await session.refresh(user)
    return user


async def change_password(
    session: AsyncSession, user: User, current_password: str, new_password: str
) -> User | None:
    """Set a new password if `current_password` is right (ending other sessions); else None."""
    if not await verify_password(current_password, user.hashed_password):
        return None
    return await update_user(
        session,
        user,
        UserUpdate(password=new_password),
        actor=user,
        action=AuditAction.USER_PASSWORD_CHANGE,
    )


async def authenticate(session: AsyncSession, email: str, password: str) -> User | None:
    """The user whose email and password match, else None (same cost either way)."""
    # Longer than any stored email: no lookup, but the same password check.
    user = await get_user_by_email(session, email) if len(email) <= MAX_EMAIL_LENGTH else None
    if not await verify_password(password, user.hashed_password if user else None):
        return None
    return user


async def list_users(session: AsyncSession, skip: int, limit: int) -> tuple[list[User], int]:
    """A page of users, oldest first, and the total count."""
    count = (await session.exec(select(func.count()).select_from(User))).one()
    page = await session.exec(
        select(User).order_by(col(User.created_at), col(User.id)).offset(skip).limit(limit)
    )
    return list(page.all()), count


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The user with this id, if any."""
    return await session.get(User, user_id)


async def ensure_first_superuser(session: AsyncSession, settings: Settings) -> bool:
    """Create the admin named by FIRST_SUPERUSER_EMAIL if absent; True when created."""
    if await get_user_by_email(session, settings.first_superuser_email) is not None:
        return False
    admin = UserCreate(
        email=settings.first_superuser_email,
        password=settings.first_superuser_password.get_secret_value(),
        is_superuser=True,
        full_name="Administrator",
    )
    try:
        await create_user(session, admin)
    except IntegrityError:  # another worker starting at the same moment created it
        await session.rollback()
        return False
    logger.info("created first admin %s", settings.first_superuser_email)
    return True


async def first_admin_has_default_password(session: AsyncSession, settings: Settings) -> bool:
    """Whether the first admin logs in with the default password (so saying it gives nothing
    away). Before the admin exists: whether it will be created with it."""
    admin = await get_user_by_email(session, settings.first_superuser_email)
    if admin is None:
        return settings.first_superuser_password.get_secret_value() == DEFAULT_SUPERUSER_PASSWORD
    return await verify_password(DEFAULT_SUPERUSER_PASSWORD, admin.hashed_password)
