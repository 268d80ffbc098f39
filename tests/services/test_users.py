from __future__ import annotations

import asyncio
import uuid

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.services.users import ensure_first_superuser, get_user_by_email


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
