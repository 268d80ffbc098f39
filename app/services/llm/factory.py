"""Pick the service for a provider and model: the effective settings, or explicit overrides."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import LLMProvider, get_settings
from app.services.llm.calls import ProviderService
from app.services.llm.errors import LLMConfigurationError
from app.services.llm.metrics import allow_model_labels
from app.services.llm.protocol import LLMService
from app.services.llm.providers import PROVIDERS
from app.services.llm.settings import load_effective_settings


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


def build_service(provider: LLMProvider, model: str) -> ProviderService:
    """The service for `provider` and `model` with the current env settings.

    Services are cheap and stateless: connections are pooled per upstream (`clients`), so
    building one per call costs a config object, not a connection.
    """
    settings = get_settings()
    spec = PROVIDERS[provider]
    spec.check(settings)
    return ProviderService(
        spec, spec.config_from(settings, model), retry_backoff=settings.llm_retry_backoff
    )


async def get_llm_service_with_overrides(
    provider: str | LLMProvider | None = None, model: str | None = None
) -> LLMServiceResult:
    """The service for `provider` and `model`; what is omitted comes from the effective settings.

    Raises LLMConfigurationError for an unknown provider or one without a configured model.
    """
    effective = await load_effective_settings()
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
    return LLMServiceResult(build_service(chosen, chosen_model), chosen, chosen_model)


def discovery_service(provider: LLMProvider) -> ProviderService:
    """A service for listing `provider`'s models: needs neither a chosen model nor the
    database (the placeholder model never reaches a chat request)."""
    return build_service(provider, "-")


async def lmstudio_service() -> ProviderService:
    """The LM Studio service for model discovery and management (a FastAPI dependency)."""
    return discovery_service(LLMProvider.LMSTUDIO)
