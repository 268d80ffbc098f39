"""Pick the service for a provider and model: the effective settings, or explicit overrides."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.core.config import LLMProvider, get_settings
from app.services.llm.calls import ProviderService
from app.services.llm.embeddings import no_embedding_model
from app.services.llm.errors import LLMConfigurationError
from app.services.llm.fallback import FallbackService
from app.services.llm.metrics import allow_model_labels
from app.services.llm.protocol import LLMService
from app.services.llm.providers import PROVIDERS
from app.services.llm.settings import EffectiveLLMSettings, load_effective_settings

logger = logging.getLogger("app.services.llm")


@dataclass(frozen=True, slots=True)
class LLMServiceResult:
    """A ready service and the provider and model it was built for."""

    service: LLMService
    provider: LLMProvider
    model: str


def parse_provider(value: str | LLMProvider) -> LLMProvider:
    """The provider named `value`; LLMConfigurationError listing the choices otherwise."""
    try:
        provider = LLMProvider(str(value).strip().lower())
    except ValueError:
        provider = None
    if provider is None or provider not in PROVIDERS:
        choices = ", ".join(p.value for p in PROVIDERS)
        raise LLMConfigurationError(f"Unknown LLM provider '{value}'; choose one of: {choices}")
    return provider


def build_service(
    provider: LLMProvider, model: str, embedding_model: str | None = None
) -> ProviderService:
    """The service for `provider` and `model` (and `embedding_model` for `embed()`) with the
    current env settings.

    Services are cheap and stateless: connections are pooled per upstream (`clients`), so
    building one per call costs a config object, not a connection.
    """
    settings = get_settings()
    spec = PROVIDERS[provider]
    spec.check(settings)
    return ProviderService(
        spec,
        spec.config_from(settings, model),
        retry_backoff=settings.llm_retry_backoff,
        embedding_model=embedding_model,
    )


async def get_llm_service_with_overrides(
    provider: str | LLMProvider | None = None, model: str | None = None
) -> LLMServiceResult:
    """The service for `provider` and `model`; what is omitted comes from the effective settings.

    Raises LLMConfigurationError for an unknown provider or one without a configured model.
    """
    effective = await load_effective_settings()
    if provider is None and not (model or "").strip() and effective.fallbacks:
        return _with_fallbacks(effective)
    chosen = parse_provider(provider) if provider is not None else effective.provider
    configured = effective.model_for(chosen)
    if configured:
        allow_model_labels([configured])
    chosen_model = (model or "").strip() or configured
    if not chosen_model:
        spec = PROVIDERS[chosen]
        raise LLMConfigurationError(
            f"No {spec.display_name} model is configured: set {chosen.value}_model "
            f"with PATCH /api/v1/llm-settings, or set {spec.env_prefix}_MODEL"
        )
    embedder = _embedding_model(effective, chosen)
    return LLMServiceResult(build_service(chosen, chosen_model, embedder), chosen, chosen_model)


async def embedding_service(
    provider: str | LLMProvider | None = None, model: str | None = None
) -> LLMServiceResult:
    """The service that embeds with `provider`'s `model`; what is omitted comes from the
    effective settings (the active provider, its embedding model). Never a fallback chain.

    Raises LLMConfigurationError naming the setting when no embedding model is configured.
    """
    effective = await load_effective_settings()
    chosen = parse_provider(provider) if provider is not None else effective.provider
    chosen_model = (model or "").strip() or _embedding_model(effective, chosen)
    if not chosen_model:
        raise no_embedding_model(PROVIDERS[chosen])
    service = build_service(chosen, chosen_model, chosen_model)
    return LLMServiceResult(service, chosen, chosen_model)


def _embedding_model(effective: EffectiveLLMSettings, provider: LLMProvider) -> str | None:
    model = effective.embedding_model_for(provider)
    if model:
        allow_model_labels([model])
    return model


def _with_fallbacks(effective: EffectiveLLMSettings) -> LLMServiceResult:
    """The active provider followed by every usable fallback (only when nothing was named
    explicitly: a caller who asked for a provider or model gets that one)."""
    primary = effective.provider
    model = effective.model_for(primary)
    if not model:
        spec = PROVIDERS[primary]
        raise LLMConfigurationError(
            f"No {spec.display_name} model is configured: set {primary.value}_model "
            f"with PATCH /api/v1/llm-settings, or set {spec.env_prefix}_MODEL"
        )
    allow_model_labels([model])
    chain = [build_service(primary, model, _embedding_model(effective, primary))]
    for entry in effective.fallbacks:
        fallback_model = effective.model_for(entry.provider)
        if entry.provider not in PROVIDERS or entry.provider == primary or not fallback_model:
            continue
        if (
            PROVIDERS[primary].local
            and not PROVIDERS[entry.provider].local
            and not entry.allow_cloud
        ):
            # Local stays local: prompts leave this machine only with the admin's opt-in.
            continue
        try:
            chain.append(build_service(entry.provider, fallback_model))
        except LLMConfigurationError as exc:
            logger.debug("llm fallback %s skipped: %s", entry.provider, exc.message)
            continue
        allow_model_labels([fallback_model])
    service: LLMService = FallbackService(chain) if len(chain) > 1 else chain[0]
    return LLMServiceResult(service, primary, model)


def discovery_service(provider: LLMProvider) -> ProviderService:
    """A service for listing `provider`'s models: needs neither a chosen model nor the
    database (the placeholder model never reaches a chat request)."""
    return build_service(provider, "-")


async def lmstudio_service() -> ProviderService:
    """The LM Studio service for model discovery and management (a FastAPI dependency)."""
    return discovery_service(LLMProvider.LMSTUDIO)
