from __future__ import annotations

import asyncio
import uuid

from pydantic import SecretStr

from app.core.config import DEFAULT_SUPERUSER_PASSWORD, get_settings
from app.core.db import get_sessionmaker
from app.models import UserCreate
from app.services.users import (
    create_user,
    ensure_first_superuser,
    first_admin_has_default_password,
    get_user_by_email,
)
from tests.conftest import ADMIN_EMAIL


async def test_workers_starting_together_create_the_first_admin_once(database_url: str) -> None:
    email = f"boss-{uuid.uuid4().hex[:8]}@example.com"
    settings = get_settings().model_copy(update={"first_superuser_email": email})

    async def start_worker() -> bool:
        async with get_sessionmaker()() as session:
            return await ensure_first_superuser(session, settings)

    created = await asyncio.gather(*(start_worker() for _ in range(3)))
    assert sorted(created) == [False, False, True]
    async with get_sessionmaker()() as session:
        admin = await get_user_by_email(session, email.upper())
    assert admin is not None
    assert admin.is_superuser


async def test_the_default_password_counts_only_while_it_logs_in(database_url: str) -> None:
    # What `make run` relies on before it prints the default login.
    settings = get_settings()
    default = SecretStr(DEFAULT_SUPERUSER_PASSWORD)
    async with get_sessionmaker()() as session:
        await ensure_first_superuser(session, settings)  # with the tests' own password
        # The admin exists with another password: the environment's default says nothing.
        admin_exists = settings.model_copy(update={"first_superuser_password": default})
        assert settings.first_superuser_email == ADMIN_EMAIL
        assert not await first_admin_has_default_password(session, admin_exists)

        # Not created yet: it will be created with the environment's password.
        email = f"not-yet-{uuid.uuid4().hex[:8]}@example.com"
        absent = settings.model_copy(update={"first_superuser_email": email})
        assert not await first_admin_has_default_password(session, absent)
        absent_default = absent.model_copy(update={"first_superuser_password": default})
        assert await first_admin_has_default_password(session, absent_default)

        # Created with the default, then the environment changed: the default still works.
        await create_user(
            session, UserCreate(email=email, password=DEFAULT_SUPERUSER_PASSWORD, is_superuser=True)
        )
        assert await first_admin_has_default_password(session, absent)
