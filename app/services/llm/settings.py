"""Effective LLM settings: the admin's `llmsettings` row over the env defaults.

Reads are cached per process and revalidated at most every `CHECK_INTERVAL` seconds with
one primary-key read, so a change saved by any worker is seen by every worker within that
interval, and a change saved by this worker is seen at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.config import LLMProvider, Settings, get_settings
from app.core.db import get_sessionmaker
from app.models import LLMSettings, LLMSettingsUpdate, utcnow
from app.services.llm.errors import LLMConfigurationError, LLMSettingsUnavailableError

logger = logging.getLogger("app.services.llm")

CHECK_INTERVAL = 0.5
SINGLETON_ID = 1


@dataclass(frozen=True, slots=True)
class SavedSettings:
    """What the `llmsettings` row holds (None when no admin has saved anything)."""

    provider: LLMProvider
    models: dict[LLMProvider, str | None]
    version: int
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class EffectiveLLMSettings:
    """The provider in use and each provider's model: saved values win over env defaults."""

    provider: LLMProvider
    models: dict[LLMProvider, str | None]
    source: Literal["database", "environment"]
    version: int
    updated_at: datetime | None

    @property
    def model(self) -> str | None:
        """The active provider's model."""
        return self.models[self.provider]

    def model_for(self, provider: LLMProvider) -> str | None:
        """The model `provider` would use."""
        return self.models[provider]


def env_model(settings: Settings, provider: LLMProvider) -> str | None:
    """A provider's fallback model from the environment (`<PROVIDER>_MODEL`)."""
    value = getattr(settings, f"{provider.value}_model", None)
    return value if isinstance(value, str) and value else None


def combine(saved: SavedSettings | None, settings: Settings) -> EffectiveLLMSettings:
    """Overlay the saved row on the env defaults."""
    defaults = {provider: env_model(settings, provider) for provider in LLMProvider}
    if saved is None:
        return EffectiveLLMSettings(settings.llm_provider, defaults, "environment", 0, None)
    models = {p: saved.models.get(p) or defaults[p] for p in LLMProvider}
    return EffectiveLLMSettings(saved.provider, models, "database", saved.version, saved.updated_at)


def _snapshot(row: LLMSettings | None) -> SavedSettings | None:
    if row is None:
        return None
    try:
        provider = LLMProvider(row.provider)
    except ValueError as exc:
        raise LLMConfigurationError(
            f"The saved LLM provider '{row.provider}' is not supported by this version; "
            "PATCH /api/v1/llm-settings with a supported provider"
        ) from exc
    models = {p: getattr(row, f"{p.value}_model", None) for p in LLMProvider}
    return SavedSettings(provider, models, row.version, row.updated_at)


class _Cache:
    saved: SavedSettings | None = None
    checked_at: float = float("-inf")
    lock: asyncio.Lock | None = None


_cache = _Cache()


def invalidate_cache() -> None:
    """Make the next read go to the database."""
    _cache.checked_at = float("-inf")


async def _read_saved() -> SavedSettings | None:
    async with get_sessionmaker()() as session:
        return _snapshot(await session.get(LLMSettings, SINGLETON_ID))


async def load_effective_settings() -> EffectiveLLMSettings:
    """The effective settings, from the per-process cache when it is fresh."""
    if time.monotonic() - _cache.checked_at >= CHECK_INTERVAL:
        await _refresh()
    return combine(_cache.saved, get_settings())


async def _refresh() -> None:
    try:
        async with asyncio.timeout(10):
            saved = await _read_saved()
    except LLMConfigurationError:
        raise
    except Exception as exc:
        if _cache.checked_at > float("-inf"):
            logger.warning("llm settings: database unreadable (%s); using the last known", exc)
            return
        raise LLMSettingsUnavailableError(
            f"The LLM settings could not be read from the database ({type(exc).__name__}); "
            "check DATABASE_URL and that migrations ran (`python -m app migrate`)"
        ) from exc
    _cache.saved = saved
    _cache.checked_at = time.monotonic()


async def read_saved_row(session: AsyncSession) -> LLMSettings | None:
    """The settings row, locked for update where the database supports it."""
    result = await session.exec(
        select(LLMSettings).where(LLMSettings.id == SINGLETON_ID).with_for_update()
    )
    return result.first()


async def save_llm_settings(
    session: AsyncSession,
    changes: LLMSettingsUpdate,
    *,
    user_id: uuid.UUID | None,
    row: LLMSettings | None = None,
) -> EffectiveLLMSettings:
    """Apply `changes` (creating the row if absent) and make every worker see them.

    Raises LLMConfigurationError when the active provider would be left without a model.
    """
    settings = get_settings()
    if row is None:
        row = await read_saved_row(session)
    if row is None:
        row = LLMSettings(id=SINGLETON_ID, provider=settings.llm_provider, version=0)
    for field, value in changes.model_dump(exclude_unset=True).items():
        setattr(row, field, value)
    saved = _snapshot(row)
    assert saved is not None
    check_usable(combine(saved, settings), saved.provider, settings)
    row.version += 1
    row.updated_at = utcnow()
    row.updated_by = user_id
    session.add(row)
    await session.commit()
    invalidate_cache()
    return combine(_snapshot(row), settings)


def check_usable(
    effective: EffectiveLLMSettings, provider: LLMProvider, settings: Settings
) -> None:
    """Raise LLMConfigurationError naming what to set if `provider` cannot be used."""
    from app.services.llm.factory import PROVIDERS

    service_class = PROVIDERS[provider]
    if effective.model_for(provider) is None:
        raise LLMConfigurationError(
            f"{service_class.display_name} model must be provided when switching to the "
            f"{provider.value} provider: send `{provider.value}_model`, or set "
            f"{service_class.env_prefix}_MODEL"
        )
    service_class.check_settings(settings)
