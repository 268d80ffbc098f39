"""The admin's LLM settings, and the models LM Studio offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status

from app.api.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from app.core.config import LLMProvider, Settings
from app.models import (
    LLMSettings,
    LLMSettingsCreate,
    LLMSettingsPublic,
    LLMSettingsUpdate,
    LMStudioLoadRequest,
    LMStudioModelPublic,
    LMStudioModelsDetail,
    LMStudioUnloadRequest,
)
from app.services.llm import (
    NO_MODELS_HINT,
    PROVIDERS,
    ProviderService,
    discover_models,
    lmstudio_service,
    redact_url,
)
from app.services.llm.health import ProviderHealth, check_providers
from app.services.llm.lmstudio_models import LoadResult, UnloadResult, load_model, unload_model
from app.services.llm.settings import (
    SINGLETON_ID,
    EffectiveLLMSettings,
    env_model,
    load_effective_settings,
    read_saved_row,
    save_llm_settings,
)

router = APIRouter(prefix="/llm-settings", tags=["llm-settings"])


def _public(effective: EffectiveLLMSettings, settings: Settings) -> LLMSettingsPublic:
    return LLMSettingsPublic(
        provider=effective.provider,
        model=effective.model,
        lmstudio_model=effective.model_for(LLMProvider.LMSTUDIO),
        openai_model=effective.model_for(LLMProvider.OPENAI),
        lmstudio_base_url=redact_url(settings.lmstudio_base_url),
        openai_base_url=redact_url(settings.openai_base_url),
        openai_api_key_set=settings.openai_api_key is not None,
        source=effective.source,
        version=effective.version,
        updated_at=effective.updated_at,
    )


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
    saved = await save_llm_settings(session, changes, user_id=admin.id, create=True)
    return _public(saved, settings)


@router.patch("")
async def update_llm_settings(
    session: SessionDep, admin: AdminUser, settings: SettingsDep, body: LLMSettingsUpdate
) -> LLMSettingsPublic:
    """Change the provider and/or models (admin only); takes effect on the next call."""
    return _public(await save_llm_settings(session, body, user_id=admin.id), settings)


@router.get("/lmstudio/models", response_model=None)
async def list_lmstudio_models(
    user: CurrentUser,
    service: Annotated[ProviderService, Depends(lmstudio_service)],
    detail: Annotated[bool, Query(description="Objects with state and context length")] = False,
) -> list[str] | LMStudioModelsDetail:
    """The models LM Studio offers: ids, or with `?detail=true` their type, state and context."""
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
    if not models or (knows_state and not loaded):
        message = f"LM Studio{where} has no model loaded: {NO_MODELS_HINT}"
    return LMStudioModelsDetail(
        base_url=base_url,
        models=[LMStudioModelPublic.model_validate(m, from_attributes=True) for m in models],
        loaded=loaded,
        message=message,
    )


# ── the admin page's view: fields, health, model management ─────────────────

# Where a provider's models can be listed with their state; others take a typed name.
DISCOVERY: dict[LLMProvider, str] = {
    LLMProvider.LMSTUDIO: "/api/v1/llm-settings/lmstudio/models?detail=true",
}


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
    kind: Literal["provider", "model"]
    value: str | None
    source: Literal["database", "environment", "unset"]
    env: str
    """The environment variable that supplies the default."""
    provider: LLMProvider | None = None
    choices: list[Choice] | None = None
    discovery: str | None = None


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
                discovery=DISCOVERY.get(provider),
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
