"""The admin's LLM settings, and the models each provider offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError

from app.api.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from app.core.config import LLMProvider, Settings
from app.models import (
    FallbackProvider,
    LLMSettings,
    LLMSettingsCreate,
    LLMSettingsPublic,
    LLMSettingsUpdate,
    LMStudioLoadRequest,
    LMStudioUnloadRequest,
    ModelPublic,
    ModelsDetail,
    ProviderPublic,
)
from app.services.llm import (
    NO_MODELS_HINT,
    PROVIDERS,
    SINGLETON_ID,
    EffectiveLLMSettings,
    LLMFallbackSettingsError,
    LoadResult,
    ProviderHealth,
    ProviderService,
    ProviderSpec,
    UnloadResult,
    check_providers,
    discover_models,
    discovery_service,
    env_embedding_model,
    env_fallbacks,
    env_model,
    lmstudio_service,
    load_effective_settings,
    load_model,
    model_name_warnings,
    read_saved_row,
    redact_url,
    save_llm_settings,
    unload_model,
)

router = APIRouter(prefix="/llm-settings", tags=["llm-settings"])


def _public(
    effective: EffectiveLLMSettings, settings: Settings, warnings: list[str] | None = None
) -> LLMSettingsPublic:
    models = {f"{p.value}_model": effective.model_for(p) for p in LLMProvider}
    models |= {f"{p.value}_embedding_model": effective.embedding_model_for(p) for p in LLMProvider}
    return LLMSettingsPublic(
        provider=effective.provider,
        model=effective.model,
        **models,
        lmstudio_base_url=redact_url(settings.lmstudio_base_url),
        openai_base_url=redact_url(settings.openai_base_url),
        openai_api_key_set=settings.openai_api_key is not None,
        fallback_providers=[
            FallbackProvider(provider=e.provider, allow_cloud=e.allow_cloud)
            for e in effective.fallbacks
        ],
        providers=[
            ProviderPublic(
                provider=provider,
                display_name=spec.display_name,
                model=effective.model_for(provider),
                base_url=spec.base_url(settings),
                key_set=spec.credentials_set(settings),
                local=spec.local,
            )
            for provider, spec in PROVIDERS.items()
        ],
        source=effective.source,
        version=effective.version,
        updated_at=effective.updated_at,
        warnings=warnings or [],
    )


async def _save(
    session: SessionDep,
    admin: AdminUser,
    settings: Settings,
    changes: LLMSettingsUpdate,
    *,
    create: bool = False,
) -> LLMSettingsPublic:
    try:
        saved = await save_llm_settings(
            session, changes, user_id=admin.id, create=create, actor=admin
        )
    except LLMFallbackSettingsError as exc:
        # A 422 in the shape of every other 422: a list of errors, each with where it is.
        where = ("body", "fallback_providers")
        raise RequestValidationError(
            [{"loc": where, "msg": exc.message, "type": exc.kind}]
        ) from exc
    # Only the names this request sets are checked, after the save: it never waits on them.
    named, embedders = (
        {
            provider: model
            for provider in LLMProvider
            if isinstance(model := getattr(changes, f"{provider.value}_{setting}"), str)
        }
        for setting in ("model", "embedding_model")
    )
    warnings = saved.warnings + await model_name_warnings(named)
    warnings += await model_name_warnings(embedders, setting="embedding_model")
    return _public(saved.effective, settings, warnings)


@router.get("")
async def read_llm_settings(_admin: AdminUser, settings: SettingsDep) -> LLMSettingsPublic:
    """The effective settings: what an admin saved, over the env defaults (admin only)."""
    return _public(await load_effective_settings(), settings)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_llm_settings(
    session: SessionDep, admin: AdminUser, settings: SettingsDep, body: LLMSettingsCreate
) -> LLMSettingsPublic:
    """Save settings for the first time (admin only); 409 if they exist (use PATCH)."""
    if await read_saved_row(session) is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="LLM settings already exist: use PATCH to change them"
        )
    changes = LLMSettingsUpdate.model_validate(body.model_dump(exclude_unset=True))
    return await _save(session, admin, settings, changes, create=True)


@router.patch("")
async def update_llm_settings(
    session: SessionDep, admin: AdminUser, settings: SettingsDep, body: LLMSettingsUpdate
) -> LLMSettingsPublic:
    """Change the provider, models and/or fallback chain (admin only); takes effect on the
    next call. `warnings` lists what was saved but may need fixing: a model its provider does
    not offer (or could not be asked about), a fallback that will be skipped."""
    return await _save(session, admin, settings, body)


def _available(provider: LLMProvider, where: Literal["path", "query"]) -> ProviderSpec:
    """The provider's spec; 422 like any bad value for a provider this build lacks."""
    spec = PROVIDERS.get(provider)
    if spec is None:
        choices = ", ".join(f"'{p.value}'" for p in PROVIDERS)
        error = {"loc": (where, "provider"), "msg": f"Input should be {choices}", "type": "enum"}
        raise RequestValidationError([error])
    return spec


@router.get("/{provider}/models", response_model=None)
async def list_provider_models(
    provider: LLMProvider,
    user: CurrentUser,
    detail: Annotated[bool, Query(description="Objects with state and context length")] = False,
) -> list[str] | ModelsDetail:
    """The models a provider offers: ids, or with `?detail=true` their type, state, context
    length and structured-output support where the provider says."""
    spec = _available(provider, "path")
    service = discovery_service(provider)
    models = await discover_models(service)
    if not detail:
        return [model.id for model in models]
    loaded = [m.id for m in models if m.state == "loaded"]
    knows_state = any(m.state is not None for m in models)
    # The upstream's address is for admins (it maps the internal network); users get what
    # to do.
    base_url = redact_url(service.base_url) if user.is_superuser else None
    where = f" at {base_url}" if base_url else ""
    message = None
    if provider is LLMProvider.LMSTUDIO and (not models or (knows_state and not loaded)):
        # LM Studio answers only with a loaded model (unless just-in-time loading is on).
        message = f"LM Studio{where} has no model loaded: {NO_MODELS_HINT}"
    elif not models:
        message = f"{spec.display_name}{where} offers no models"
    return ModelsDetail(
        base_url=base_url,
        models=[ModelPublic.model_validate(m, from_attributes=True) for m in models],
        loaded=loaded,
        message=message,
    )


# ── the admin page's view: fields, health, model management ─────────────────


def _discovery(provider: LLMProvider) -> str:
    """Where the page asks for the models a provider offers."""
    return f"/api/v1/llm-settings/{provider.value}/models?detail=true"


@dataclass(frozen=True, slots=True)
class Choice:
    """One value a setting may take, with the words to show for it."""

    value: str
    label: str


@dataclass(frozen=True, slots=True)
class SettingField:
    """One setting as the admin page renders it: its value and where that comes from."""

    name: str
    """The key in a PATCH /api/v1/llm-settings body."""
    label: str
    kind: Literal["provider", "model", "fallback"]
    value: str | None
    """A fallback chain's value is its providers' names, comma-separated (as in the env)."""
    source: Literal["database", "environment", "unset"]
    env: str
    """The environment variable that supplies the default."""
    provider: LLMProvider | None = None
    choices: list[Choice] | None = None
    discovery: str | None = None
    pick: Literal["list", "type"] | None = None
    """A model's: chosen from discovery's list (a local provider's downloaded models), or
    typed with that list as suggestions (a cloud provider's list is long, its names known)."""


@router.get("/fields")
async def read_setting_fields(
    session: SessionDep, _admin: AdminUser, settings: SettingsDep
) -> list[SettingField]:
    """Each setting with its effective value and its source (saved or environment)."""
    row = await session.get(LLMSettings, SINGLETON_ID)
    effective = await load_effective_settings()
    fields = [
        SettingField(
            name="provider",
            label="Provider",
            kind="provider",
            value=effective.provider.value,
            source="database" if row is not None else "environment",
            env="LLM_PROVIDER",
            choices=[Choice(p.value, spec.display_name) for p, spec in PROVIDERS.items()],
        )
    ]
    for provider, spec in PROVIDERS.items():
        saved = getattr(row, f"{provider.value}_model", None) if row is not None else None
        source: Literal["database", "environment", "unset"] = (
            "database" if saved else "environment" if env_model(settings, provider) else "unset"
        )
        fields.append(
            SettingField(
                name=f"{provider.value}_model",
                label=f"{spec.display_name} model",
                kind="model",
                value=effective.model_for(provider),
                source=source,
                env=f"{spec.env_prefix}_MODEL",
                provider=provider,
                discovery=_discovery(provider),
                pick="list" if spec.local else "type",
            )
        )
    for provider, spec in PROVIDERS.items():
        saved = getattr(row, f"{provider.value}_embedding_model", None) if row else None
        env = env_embedding_model(settings, provider)
        fields.append(
            SettingField(
                name=f"{provider.value}_embedding_model",
                label=f"{spec.display_name} embedding model",
                kind="model",
                value=effective.embedding_model_for(provider),
                source="database" if saved else "environment" if env else "unset",
                env=f"{spec.env_prefix}_EMBEDDING_MODEL",
                provider=provider,
                discovery=_discovery(provider),
                pick="list" if spec.local else "type",
            )
        )
    chain_source: Literal["database", "environment", "unset"] = "unset"
    if row is not None and row.fallback_providers:
        chain_source = "database"
    elif env_fallbacks(settings):
        chain_source = "environment"
    fields.append(
        SettingField(
            name="fallback_providers",
            label="Fallback order",
            kind="fallback",
            value=", ".join(e.provider.value for e in effective.fallbacks) or None,
            source=chain_source,
            env="LLM_FALLBACK_PROVIDERS",
        )
    )
    return fields


@router.get("/health")
async def read_provider_health(
    _admin: AdminUser,
    settings: SettingsDep,
    provider: Annotated[LLMProvider | None, Query(description="Check only this one")] = None,
) -> list[ProviderHealth]:
    """Each provider: configured, reachable, latency of a models listing, model count, key set.

    Providers are asked concurrently with a short deadline (admin only).
    """
    if provider is not None:
        _available(provider, "query")
    effective = await load_effective_settings()
    return await check_providers(settings, effective, [provider] if provider else None)


@router.post("/lmstudio/models/load")
async def load_lmstudio_model(
    _admin: AdminUser,
    service: Annotated[ProviderService, Depends(lmstudio_service)],
    body: LMStudioLoadRequest,
) -> LoadResult:
    """Load a model in LM Studio (>= 0.4), unless it is loaded already (admin only)."""
    return await load_model(service, body.model, context_length=body.context_length, ttl=body.ttl)


@router.post("/lmstudio/models/unload")
async def unload_lmstudio_model(
    _admin: AdminUser,
    service: Annotated[ProviderService, Depends(lmstudio_service)],
    body: LMStudioUnloadRequest,
) -> UnloadResult:
    """Unload every loaded instance of a model in LM Studio (>= 0.4) (admin only)."""
    return await unload_model(service, body.model)
