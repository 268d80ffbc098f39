"""The LLM service layer: one interface over LM Studio and cloud providers.

from app.services.llm import get_llm_service

llm_service = await get_llm_service()
print(await llm_service.get_response("Explain quantum computing"))

Everything the API and the CLI use is imported from here.
"""

from app.services.llm.calls import (
    ProviderService,
    build_messages,
    clear_discovery_cache,
    discover_models,
)
from app.services.llm.config import (
    BedrockConfig,
    LMStudioConfig,
    OllamaConfig,
    OpenAIConfig,
    OpenRouterConfig,
    ProviderConfig,
)
from app.services.llm.errors import (
    LLMConfigurationError,
    LLMConnectionError,
    LLMError,
    LLMFallbackSettingsError,
    LLMInvalidRequestError,
    LLMModelNotFoundError,
    LLMNoModelsError,
    LLMOverloadedError,
    LLMSettingsUnavailableError,
    LLMTimeoutError,
    LLMUpstreamError,
    LLMValidationError,
)
from app.services.llm.factory import (
    LLMServiceResult,
    discovery_service,
    embedding_service,
    get_llm_service_with_overrides,
    lmstudio_service,
    parse_provider,
)
from app.services.llm.fallback import FallbackService, with_fallback
from app.services.llm.health import ProviderHealth, check_providers
from app.services.llm.json_schema_guard import (
    GuardedSchema,
    UnsafeSchemaError,
    check_size,
    guard_schema_off_loop,
)
from app.services.llm.lmstudio_models import LoadResult, UnloadResult, load_model, unload_model
from app.services.llm.model_names import model_name_warnings
from app.services.llm.protocol import (
    Capabilities,
    Completion,
    Embeddings,
    LLMService,
    ModelInfo,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from app.services.llm.providers import PROVIDERS
from app.services.llm.providers.base import ProviderSpec
from app.services.llm.providers.clients import close_clients, redact_url
from app.services.llm.providers.lmstudio import NO_MODELS_HINT
from app.services.llm.settings import (
    SINGLETON_ID,
    EffectiveLLMSettings,
    FallbackEntry,
    SaveResult,
    env_embedding_model,
    env_fallbacks,
    env_model,
    load_effective_settings,
    read_saved_row,
    save_llm_settings,
)
from app.services.llm.structured import (
    StructuredMode,
    StructuredResult,
    generate_structured,
    generate_structured_json,
)
from app.services.llm.tools import ToolUse, tool_from_model


async def get_llm_service() -> LLMService:
    """The service for the effective settings (the admin's saved choice over env defaults).

    Works bare (`await get_llm_service()`) and as a FastAPI dependency.
    """
    return (await get_llm_service_with_overrides()).service


__all__ = [
    "NO_MODELS_HINT",
    "PROVIDERS",
    "SINGLETON_ID",
    "BedrockConfig",
    "Capabilities",
    "Completion",
    "EffectiveLLMSettings",
    "Embeddings",
    "FallbackEntry",
    "FallbackService",
    "GuardedSchema",
    "LLMConfigurationError",
    "LLMConnectionError",
    "LLMError",
    "LLMFallbackSettingsError",
    "LLMInvalidRequestError",
    "LLMModelNotFoundError",
    "LLMNoModelsError",
    "LLMOverloadedError",
    "LLMService",
    "LLMServiceResult",
    "LLMSettingsUnavailableError",
    "LLMTimeoutError",
    "LLMUpstreamError",
    "LLMValidationError",
    "LMStudioConfig",
    "LoadResult",
    "ModelInfo",
    "OllamaConfig",
    "OpenAIConfig",
    "OpenRouterConfig",
    "ProviderConfig",
    "ProviderHealth",
    "ProviderService",
    "ProviderSpec",
    "SaveResult",
    "StreamChunk",
    "StructuredMode",
    "StructuredResult",
    "ToolCall",
    "ToolCallDelta",
    "ToolUse",
    "UnloadResult",
    "UnsafeSchemaError",
    "Usage",
    "build_messages",
    "check_providers",
    "check_size",
    "clear_discovery_cache",
    "close_clients",
    "discover_models",
    "discovery_service",
    "embedding_service",
    "env_embedding_model",
    "env_fallbacks",
    "env_model",
    "generate_structured",
    "generate_structured_json",
    "get_llm_service",
    "get_llm_service_with_overrides",
    "guard_schema_off_loop",
    "lmstudio_service",
    "load_effective_settings",
    "load_model",
    "model_name_warnings",
    "parse_provider",
    "read_saved_row",
    "redact_url",
    "save_llm_settings",
    "tool_from_model",
    "unload_model",
    "with_fallback",
]
