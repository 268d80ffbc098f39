"""Effective LLM settings: the admin's `llmsettings` row over the env defaults.

Reads are cached per process. A save invalidates the cache of the process that made it at
once, and every other worker's:
- on PostgreSQL, the save sends `NOTIFY llmsettings_changed` in its transaction and each
  worker's `SettingsWatcher` (started by the app's lifespan) drops its cache on receipt;
- otherwise (SQLite, or while a worker's listener is down), the cache is revalidated at
  most every `CHECK_INTERVAL` seconds with one primary-key read.
Either way a change is seen by every worker within a second, without a per-request query.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import text, update
from sqlalchemy.engine import make_url
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.core.config import LLMProvider, Settings, get_settings
from app.core.db import get_sessionmaker, upsert_insert
from app.models import (
    AuditAction,
    AuditTarget,
    LLMSettings,
    LLMSettingsUpdate,
    ProviderModels,
    User,
    utcnow,
)
from app.services import audit
from app.services.credential_cache import NOTIFY_CHANNEL as CREDENTIALS_CHANNEL
from app.services.credential_cache import credential_cache, on_credentials_notify
from app.services.llm.errors import (
    LLMConfigurationError,
    LLMFallbackSettingsError,
    LLMSettingsUnavailableError,
)
from app.services.llm.per_loop import PerLoop
from app.services.llm.providers import PROVIDERS

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

logger = logging.getLogger("app.services.llm")

CHECK_INTERVAL = 0.5
CHECK_INTERVAL_WHILE_LISTENING = 30.0  # a safety net: notifications do the real work
NOTIFY_CHANNEL = "llmsettings_changed"
SINGLETON_ID = 1


@dataclass(frozen=True, slots=True)
class FallbackEntry:
    """One provider of the fallback chain (it answers with its own configured model)."""

    provider: LLMProvider
    allow_cloud: bool = False
    """The admin's explicit opt-in to fall back to this cloud provider from a local one."""


@dataclass(frozen=True, slots=True)
class SavedSettings:
    """What the `llmsettings` row holds (None when no admin has saved anything)."""

    provider: LLMProvider
    models: dict[LLMProvider, str | None]
    version: int
    updated_at: datetime | None
    fallbacks: tuple[FallbackEntry, ...] = ()
    """Empty: the env default (LLM_FALLBACK_PROVIDERS) applies."""
    embedding_models: dict[LLMProvider, str | None] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EffectiveLLMSettings:
    """The provider in use and each provider's model: saved values win over env defaults."""

    provider: LLMProvider
    models: dict[LLMProvider, str | None]
    source: Literal["database", "environment"]
    version: int
    updated_at: datetime | None
    fallbacks: tuple[FallbackEntry, ...] = ()
    """The providers to try, in order, when the active one fails before answering."""
    embedding_models: dict[LLMProvider, str | None] = dataclasses.field(default_factory=dict)
    """Each provider's embedding model (`embed()`, POST /v1/embeddings)."""

    @property
    def model(self) -> str | None:
        """The active provider's model."""
        return self.models[self.provider]

    def model_for(self, provider: LLMProvider) -> str | None:
        """The model `provider` would use."""
        return self.models[provider]

    def embedding_model_for(self, provider: LLMProvider) -> str | None:
        """The embedding model `provider` would use."""
        return self.embedding_models.get(provider)


def env_model(settings: Settings, provider: LLMProvider) -> str | None:
    """A provider's fallback model from the environment (`<PROVIDER>_MODEL`)."""
    value = getattr(settings, f"{provider.value}_model", None)
    return value if isinstance(value, str) and value else None


def env_embedding_model(settings: Settings, provider: LLMProvider) -> str | None:
    """A provider's embedding model from the environment (`<PROVIDER>_EMBEDDING_MODEL`)."""
    value = getattr(settings, f"{provider.value}_embedding_model", None)
    return value if isinstance(value, str) and value else None


def env_fallbacks(settings: Settings) -> tuple[FallbackEntry, ...]:
    """LLM_FALLBACK_PROVIDERS (repeats dropped), each opted in to cloud fallback when
    LLM_FALLBACK_ALLOW_CLOUD names it."""
    opted_in = set(settings.llm_fallback_allow_cloud)
    names = dict.fromkeys(settings.llm_fallback_providers)
    return tuple(FallbackEntry(provider, provider in opted_in) for provider in names)


def combine(saved: SavedSettings | None, settings: Settings) -> EffectiveLLMSettings:
    """Overlay the saved row on the env defaults."""
    defaults = {provider: env_model(settings, provider) for provider in LLMProvider}
    embedders = {provider: env_embedding_model(settings, provider) for provider in LLMProvider}
    fallbacks = (saved.fallbacks if saved is not None else ()) or env_fallbacks(settings)
    if saved is None:
        effective = EffectiveLLMSettings(settings.llm_provider, defaults, "environment", 0, None)
    else:
        models = {p: saved.models.get(p) or defaults[p] for p in LLMProvider}
        embedders = {p: saved.embedding_models.get(p) or embedders[p] for p in LLMProvider}
        effective = EffectiveLLMSettings(
            saved.provider, models, "database", saved.version, saved.updated_at
        )
    # The active provider is never its own fallback; one this build lacks is never tried.
    chain = tuple(
        e for e in fallbacks if e.provider != effective.provider and e.provider in PROVIDERS
    )
    return dataclasses.replace(effective, fallbacks=chain, embedding_models=embedders)


def _fallbacks_from_row(value: object) -> tuple[FallbackEntry, ...]:
    entries = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            provider = LLMProvider(str(item.get("provider")))
        except ValueError:
            continue  # saved by a version that knew a provider this one does not
        entries.append(FallbackEntry(provider, item.get("allow_cloud") is True))
    return tuple(entries)


def _fallbacks_for_row(entries: Sequence[FallbackEntry]) -> list[dict[str, Any]]:
    return [{"provider": e.provider.value, "allow_cloud": e.allow_cloud} for e in entries]


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
    fallbacks = _fallbacks_from_row(row.fallback_providers)
    embedders = {p: getattr(row, f"{p.value}_embedding_model", None) for p in LLMProvider}
    return SavedSettings(provider, models, row.version, row.updated_at, fallbacks, embedders)


class _Cache:
    saved: SavedSettings | None = None
    loaded: bool = False  # `saved` holds a real read (None then means "no row")
    checked_at: float = float("-inf")
    generation: int = 0  # bumped by every invalidation
    invalidated: bool = False  # a save happened: the next read must wait for the database
    listening: bool = False  # a SettingsWatcher holds a live LISTEN connection
    revalidating: asyncio.Task[None] | None = None


_cache = _Cache()
_refresh_lock: PerLoop[asyncio.Lock] = PerLoop(asyncio.Lock)


def invalidate_cache() -> None:
    """Make the next read go to the database."""
    _cache.checked_at = float("-inf")
    _cache.generation += 1
    _cache.invalidated = True


def _stale() -> bool:
    interval = CHECK_INTERVAL_WHILE_LISTENING if _cache.listening else CHECK_INTERVAL
    return time.monotonic() - _cache.checked_at >= interval


async def _read_saved() -> SavedSettings | None:
    async with get_sessionmaker()() as session:
        return _snapshot(await session.get(LLMSettings, SINGLETON_ID))


async def load_effective_settings() -> EffectiveLLMSettings:
    """The effective settings, from the per-process cache when it is fresh.

    After a save (here, or announced by NOTIFY) callers wait for one database read. The
    periodic revalidation does not make anyone wait: the known settings are used while one
    background read checks them, because under load a read waiting for its thread can take
    far longer than the request itself.
    """
    saved = _cache.saved
    if _stale():
        if _cache.loaded and not _cache.invalidated:
            _revalidate_in_background()
        else:
            # One read refreshes the cache for every waiting request.
            async with _refresh_lock.get():
                saved = await _refresh() if _stale() else _cache.saved
    return _combined(saved, get_settings())


_last_combined: tuple[SavedSettings | None, Settings, EffectiveLLMSettings] | None = None


def _combined(saved: SavedSettings | None, settings: Settings) -> EffectiveLLMSettings:
    # Both inputs are replaced, never mutated, so identity says whether the overlay changed.
    global _last_combined
    last = _last_combined
    if last is not None and last[0] is saved and last[1] is settings:
        return last[2]
    effective = combine(saved, settings)
    _last_combined = (saved, settings, effective)
    return effective


def _revalidate_in_background() -> None:
    task = _cache.revalidating
    if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
        return
    _cache.revalidating = asyncio.get_running_loop().create_task(_revalidate())


async def _revalidate() -> None:
    try:
        await _refresh()  # keeps (and logs) the last known settings if the database fails
    except Exception as exc:
        logger.warning("llm settings: revalidation failed (%s); using the last known", exc)


async def _refresh() -> SavedSettings | None:
    """Read the row into the cache; return what was read (or the last known on failure).

    A read during which the cache was invalidated again (a NOTIFY, often for the very save
    the caller is waiting on) is not cached, since it may predate that save; it is still
    returned, because it started after the invalidation that made the caller wait.
    """
    generation = _cache.generation
    try:
        async with asyncio.timeout(10):
            saved = await _read_saved()
    except LLMConfigurationError:
        raise
    except Exception as exc:
        if _cache.loaded:
            logger.warning("llm settings: database unreadable (%s); using the last known", exc)
            _cache.checked_at = time.monotonic()
            return _cache.saved
        raise LLMSettingsUnavailableError(
            f"The LLM settings could not be read from the database ({type(exc).__name__}); "
            "check DATABASE_URL and that migrations ran (`python -m app migrate`)"
        ) from exc
    if _cache.generation != generation:
        return saved  # not cached: the next caller reads again
    _cache.saved, _cache.loaded, _cache.invalidated = saved, True, False
    _cache.checked_at = time.monotonic()
    return saved


async def read_saved_row(session: AsyncSession) -> LLMSettings | None:
    """The settings row, locked for update where the database supports it."""
    result = await session.exec(
        select(LLMSettings).where(LLMSettings.id == SINGLETON_ID).with_for_update()
    )
    return result.first()


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a save made effective, and what it kept that the admin may want to fix."""

    effective: EffectiveLLMSettings
    warnings: list[str]


_AUDITED_FIELDS = ("provider", *ProviderModels.model_fields, "fallback_providers")


async def save_llm_settings(
    session: AsyncSession,
    changes: LLMSettingsUpdate,
    *,
    user_id: uuid.UUID | None,
    create: bool = False,
    actor: User | None = None,
) -> SaveResult:
    """Apply `changes` (creating the row if absent) and make every worker see them.

    One statement writes: an insert that, when the row exists, updates it instead (INSERT
    ... ON CONFLICT DO UPDATE, bumping `version` in the database), so concurrent first saves
    serialise on the row instead of failing. With `create=True` (POST) an existing row is an
    IntegrityError (409). The merged row is then checked, with nothing saved on failure:
    LLMConfigurationError when the active provider would be left without a model,
    LLMFallbackSettingsError (422) for a fallback chain that cannot work. The active
    provider is dropped from the saved chain (a warning says so); problems of a chain this
    save did not set are warnings, never a refusal. One audit event (by `actor`; None: the
    command line) records what changed, in the same transaction.
    """
    settings = get_settings()
    values = changes.model_dump(exclude_unset=True)
    requested: tuple[FallbackEntry, ...] | None = None
    if "fallback_providers" in values:
        requested = tuple(
            FallbackEntry(e.provider, e.allow_cloud) for e in changes.fallback_providers
        )
        check_fallback_list(requested)
        values["fallback_providers"] = _fallbacks_for_row(requested)
    previous = await read_saved_row(session)
    before = {name: getattr(previous, name) for name in _AUDITED_FIELDS} if previous else {}
    now = utcnow()
    fresh = LLMSettings(id=SINGLETON_ID, provider=settings.llm_provider, version=1)
    fresh.sqlmodel_update({**values, "updated_at": now, "updated_by": user_id})
    table = LLMSettings.metadata.tables[str(LLMSettings.__tablename__)]
    dialect = session.get_bind().dialect.name
    statement = upsert_insert(dialect)(table).values(fresh.model_dump())
    if not create:
        bump = {"version": table.c.version + 1, "updated_at": now, "updated_by": user_id}
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.id], set_={**values, **bump}
        )
    result = await session.exec(statement.returning(*table.c))
    row = LLMSettings(**result.mappings().one())
    saved = _snapshot(row)
    assert saved is not None
    warnings: list[str] = []
    try:
        check_usable(combine(saved, settings), saved.provider, settings)
        if any(e.provider == saved.provider for e in saved.fallbacks):
            # Never refused: the seed's `{"provider": ..., "<provider>_model": ...}` must save.
            kept = tuple(e for e in saved.fallbacks if e.provider != saved.provider)
            await session.exec(
                update(table)
                .where(table.c.id == SINGLETON_ID)
                .values(fallback_providers=_fallbacks_for_row(kept))
            )
            saved = dataclasses.replace(saved, fallbacks=kept)
            warnings.append(
                f"{PROVIDERS[saved.provider].display_name} is the active provider, so it was "
                "removed from fallback_providers"
            )
        effective = combine(saved, settings)
        warnings += check_fallback_chain(effective, settings, strict=bool(requested))
    except LLMConfigurationError:
        await session.rollback()
        raise
    if requested is not None and not requested and effective.fallbacks:
        names = ", ".join(e.provider.value for e in effective.fallbacks)
        warnings.append(f"fallback_providers is empty, so LLM_FALLBACK_PROVIDERS applies: {names}")
    after = {name: getattr(row, name) for name in _AUDITED_FIELDS}
    after["fallback_providers"] = _fallbacks_for_row(saved.fallbacks)
    audit.record(
        session,
        actor,
        AuditAction.LLM_SETTINGS_UPDATE if previous else AuditAction.LLM_SETTINGS_CREATE,
        AuditTarget.LLM_SETTINGS,
        SINGLETON_ID,
        audit.diff(before, after, _AUDITED_FIELDS),
    )
    if dialect == "postgresql":
        # Delivered to every listening worker when (and only if) this transaction commits.
        await session.exec(  # type: ignore[call-overload]
            text("SELECT pg_notify(:channel, :version)"),
            params={"channel": NOTIFY_CHANNEL, "version": str(row.version)},
        )
    await session.commit()
    invalidate_cache()
    return SaveResult(effective, warnings)


def check_usable(
    effective: EffectiveLLMSettings, provider: LLMProvider, settings: Settings
) -> None:
    """Raise LLMConfigurationError naming what to set if `provider` cannot be used."""
    spec = PROVIDERS.get(provider)
    if spec is None:
        choices = ", ".join(p.value for p in PROVIDERS)
        raise LLMConfigurationError(
            f"The {provider.value} provider is not available in this build; choose one of: "
            f"{choices}"
        )
    if effective.model_for(provider) is None:
        raise LLMConfigurationError(
            f"{spec.display_name} model must be provided when switching to the "
            f"{provider.value} provider: send `{provider.value}_model`, or set "
            f"{spec.env_prefix}_MODEL"
        )
    spec.check(settings)


def check_fallback_list(entries: Sequence[FallbackEntry]) -> None:
    """Raise LLMFallbackSettingsError for a chain naming a provider this build lacks, naming
    one twice, or longer than every provider but the active one."""
    unknown = [e.provider.value for e in entries if e.provider not in PROVIDERS]
    if unknown:
        choices = ", ".join(p.value for p in PROVIDERS)
        raise LLMFallbackSettingsError(
            f"fallback_providers: unknown provider {', '.join(unknown)}; choose from: {choices}"
        )
    names = [e.provider.value for e in entries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LLMFallbackSettingsError(
            f"fallback_providers: {', '.join(repeated)} is listed more than once; "
            "list each provider at most once"
        )
    most = len(PROVIDERS) - 1
    if len(entries) > most:
        raise LLMFallbackSettingsError(
            f"fallback_providers: at most {most} providers (every provider but the active "
            f"one), not {len(entries)}"
        )


def check_fallback_chain(
    effective: EffectiveLLMSettings, settings: Settings, *, strict: bool
) -> list[str]:
    """What keeps a provider of the effective chain from being a fallback: no model
    configured for it, its credentials unset, or a cloud provider behind a local one without
    `allow_cloud`. With `strict` (the save set the chain) LLMFallbackSettingsError names
    them all; else they are returned as warnings (at runtime such a provider is skipped)."""
    primary = PROVIDERS[effective.provider]
    problems = []
    for entry in effective.fallbacks:
        spec = PROVIDERS[entry.provider]
        name = entry.provider.value
        if effective.model_for(entry.provider) is None:
            problems.append(
                f"{spec.display_name} has no model configured: send `{name}_model`, or set "
                f"{spec.env_prefix}_MODEL"
            )
        if (missing := spec.missing_credentials(settings)) is not None:
            problems.append(f"{spec.display_name}: {missing}")
        if primary.local and not spec.local and not entry.allow_cloud:
            problems.append(
                f"falling back from {primary.display_name} (local) to {spec.display_name} "
                "(cloud) would send prompts off this machine; to allow it, send "
                f'{{"provider": "{name}", "allow_cloud": true}}'
            )
    if strict and problems:
        raise LLMFallbackSettingsError("fallback_providers: " + "; ".join(problems))
    return [f"fallback_providers: {p}; it is skipped as a fallback until then" for p in problems]


class SettingsWatcher:
    """Keeps one LISTEN connection to PostgreSQL for every worker-wide cache.

    On `llmsettings_changed` it drops the settings cache; on `credentials_changed` (see
    `app.services.credential_cache`) the named user's cached credentials. Reconnects with a
    delay when the connection is lost; meanwhile both caches fall back to revalidating on
    their own (settings every `CHECK_INTERVAL` seconds, credentials every
    AUTH_CACHE_SECONDS), and both are dropped whole on reconnecting.
    """

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def applies_to(database_url: str) -> bool:
        """True when the database can notify (PostgreSQL)."""
        return make_url(database_url).get_backend_name() == "postgresql"

    def start(self) -> None:
        """Begin listening in the background."""
        self._task = asyncio.create_task(self._run(), name="llmsettings-watcher")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        _cache.listening = False

    async def _run(self) -> None:
        import asyncpg  # only a worker on PostgreSQL gets here

        while True:
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(self._dsn, timeout=5)
            except Exception as exc:  # the watcher must outlive any failure; polling covers
                logger.warning(
                    "llm settings: cannot LISTEN (%s: %s); polling instead",
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(5)
                continue
            try:
                connection.add_termination_listener(lambda _conn, event=lost: event.set())
                await connection.add_listener(NOTIFY_CHANNEL, self._on_settings_notify)
                await connection.add_listener(CREDENTIALS_CHANNEL, self._on_credentials_notify)
                # Anything saved while we were not listening.
                invalidate_cache()
                credential_cache.clear()
                _cache.listening = True
                await lost.wait()
                logger.warning("llm settings: LISTEN connection lost; reconnecting")
            except Exception as exc:
                # Also asyncpg's InterfaceError family (a connection terminated between the
                # connect and LISTEN), which is not a PostgresError: it used to end the watcher.
                logger.warning(
                    "llm settings: LISTEN failed (%s: %s); reconnecting", type(exc).__name__, exc
                )
            finally:
                _cache.listening = False
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)
            await asyncio.sleep(1)

    @staticmethod
    def _on_settings_notify(
        _connection: asyncpg.Connection[Any] | PoolConnectionProxy[Any],
        _pid: int,
        _channel: str,
        payload: object,
    ) -> None:
        logger.debug("llm settings: version %s saved by a worker; dropping the cache", payload)
        invalidate_cache()

    @staticmethod
    def _on_credentials_notify(
        _connection: asyncpg.Connection[Any] | PoolConnectionProxy[Any],
        _pid: int,
        _channel: str,
        payload: object,
    ) -> None:
        on_credentials_notify(str(payload))
