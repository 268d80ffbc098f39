"""Pick the service for a provider and model: the effective settings, or explicit overrides."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import LLMProvider, get_settings
from app.services.llm.errors import LLMConfigurationError
from app.services.llm.metrics import allow_model_labels
from app.services.llm.protocol import LLMService
from app.services.llm.providers.lmstudio import LMStudioService
from app.services.llm.providers.openai import OpenAIService
from app.services.llm.providers.openai_compatible import OpenAICompatibleService
from app.services.llm.settings import load_effective_settings

PROVIDERS: dict[LLMProvider, type[OpenAICompatibleService]] = {
    LLMProvider.LMSTUDIO: LMStudioService,
    LLMProvider.OPENAI: OpenAIService,
}


@dataclass(frozen=True, slots=True)
class LLMServiceResult:
    """A ready service and the provider and model it was built for."""

    service: LLMService
    provider: LLMProvider
    model: str


def parse_provider(value: str | LLMProvider) -> LLMProvider:
    """The provider named `value`; LLMConfigurationError listing the choices otherwise."""
    try:
        return LLMProvider(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(p.value for p in LLMProvider)
        raise LLMConfigurationError(
            f"Unknown LLM provider '{value}'; choose one of: {choices}"
        ) from None


def build_service(provider: LLMProvider, model: str) -> OpenAICompatibleService:
    """The service for `provider` and `model` with the current env settings.

    Services are cheap and stateless: connections are pooled per upstream (`clients`), so
    building one per call costs a config object, not a connection.
    """
    settings = get_settings()
    service_class = PROVIDERS[provider]
    return service_class(
        service_class.config_from(settings, model),
        retry_backoff=settings.llm_retry_backoff,
        transport=settings.llm_http_transport,
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
        service_class = PROVIDERS[chosen]
        raise LLMConfigurationError(
            f"No {service_class.display_name} model is configured: set {chosen.value}_model "
            f"with PATCH /api/v1/llm-settings, or set {service_class.env_prefix}_MODEL"
        )
    return LLMServiceResult(build_service(chosen, chosen_model), chosen, chosen_model)


async def lmstudio_service() -> LMStudioService:
    """The LM Studio service for model discovery: needs neither a chosen model nor the
    database (the placeholder model never reaches a chat request)."""
    service = build_service(LLMProvider.LMSTUDIO, "-")
    assert isinstance(service, LMStudioService)
    return service
