"""The admin's LLM settings, and the models LM Studio offers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from app.api.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from app.core.config import LLMProvider, Settings
from app.models import (
    LLMSettingsCreate,
    LLMSettingsPublic,
    LLMSettingsUpdate,
    LMStudioModelPublic,
    LMStudioModelsDetail,
)
from app.services.llm.factory import lmstudio_service
from app.services.llm.providers.clients import redact_url
from app.services.llm.providers.lmstudio import NO_MODELS_HINT, LMStudioService
from app.services.llm.providers.openai_compatible import discover_models
from app.services.llm.settings import (
    EffectiveLLMSettings,
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
    service: Annotated[LMStudioService, Depends(lmstudio_service)],
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
