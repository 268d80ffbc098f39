"""The LLM service layer: one interface over LM Studio and cloud providers.

from app.services.llm import get_llm_service

llm_service = await get_llm_service()
print(await llm_service.get_response("Explain quantum computing"))
"""

from app.services.llm.config import LMStudioConfig, OpenAIConfig
from app.services.llm.errors import (
    LLMConfigurationError,
    LLMConnectionError,
    LLMError,
    LLMModelNotFoundError,
    LLMNoModelsError,
    LLMTimeoutError,
    LLMUpstreamError,
    LLMValidationError,
)
from app.services.llm.factory import LLMServiceResult, get_llm_service_with_overrides
from app.services.llm.protocol import LLMService


async def get_llm_service() -> LLMService:
    """The service for the effective settings (the admin's saved choice over env defaults).

    Works bare (`await get_llm_service()`) and as a FastAPI dependency.
    """
    return (await get_llm_service_with_overrides()).service


__all__ = [
    "LLMConfigurationError",
    "LLMConnectionError",
    "LLMError",
    "LLMModelNotFoundError",
    "LLMNoModelsError",
    "LLMService",
    "LLMServiceResult",
    "LLMTimeoutError",
    "LLMUpstreamError",
    "LLMValidationError",
    "LMStudioConfig",
    "OpenAIConfig",
    "get_llm_service",
    "get_llm_service_with_overrides",
]
