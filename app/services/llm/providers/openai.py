"""OpenAI (or any OpenAI-compatible endpoint that wants an API key)."""

from __future__ import annotations

from typing import ClassVar

from app.core.config import LLMProvider, Settings
from app.services.llm.config import OpenAIConfig
from app.services.llm.errors import LLMConfigurationError
from app.services.llm.providers.openai_compatible import OpenAICompatibleService


class OpenAIService(OpenAICompatibleService):
    """A model on OpenAI's API."""

    provider: ClassVar[LLMProvider] = LLMProvider.OPENAI
    display_name: ClassVar[str] = "OpenAI"
    env_prefix: ClassVar[str] = "OPENAI"
    connection_hint: ClassVar[str] = "check OPENAI_BASE_URL and this machine's network"

    @classmethod
    def config_from(cls, settings: Settings, model: str) -> OpenAIConfig:
        """OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_TIMEOUT and OPENAI_MAX_RETRIES with `model`."""
        cls.check_settings(settings)
        assert settings.openai_api_key is not None
        return OpenAIConfig(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            default_model=model,
            max_retries=settings.openai_max_retries,
            timeout=settings.openai_timeout,
        )

    @classmethod
    def check_settings(cls, settings: Settings) -> None:
        """The openai provider needs OPENAI_API_KEY."""
        if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
            raise LLMConfigurationError(
                "OPENAI_API_KEY is not set: the openai provider cannot be used until it is"
            )

    def api_key(self) -> str:
        """The configured OPENAI_API_KEY."""
        assert isinstance(self.config, OpenAIConfig)
        return self.config.api_key.get_secret_value()
