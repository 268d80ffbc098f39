"""OpenAI (or any OpenAI-compatible endpoint that wants an API key)."""

from __future__ import annotations

from pydantic import SecretStr

from app.core.config import LLMProvider, Settings
from app.services.llm.config import OpenAIConfig
from app.services.llm.providers.base import ProviderSpec, holds_secret
from app.services.llm.providers.openai_compatible import OpenAIWire


def config_from(settings: Settings, model: str) -> OpenAIConfig:
    """OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_TIMEOUT and OPENAI_MAX_RETRIES with `model`."""
    return OpenAIConfig(
        api_key=settings.openai_api_key or SecretStr(""),
        base_url=settings.openai_base_url,
        default_model=model,
        max_retries=settings.openai_max_retries,
        timeout=settings.openai_timeout,
    )


def key_set(settings: Settings) -> bool:
    """Whether OPENAI_API_KEY holds a key."""
    return holds_secret(settings.openai_api_key)


def missing_key(settings: Settings) -> str | None:
    """Why the openai provider cannot be used: OPENAI_API_KEY is not set."""
    if key_set(settings):
        return None
    return "OPENAI_API_KEY is not set: the openai provider cannot be used until it is"


SPEC = ProviderSpec(
    provider=LLMProvider.OPENAI,
    display_name="OpenAI",
    env_prefix="OPENAI",
    connection_hint="check OPENAI_BASE_URL and this machine's network",
    local=False,
    config_from=config_from,
    make_wire=OpenAIWire,
    credentials_set=key_set,
    missing_credentials=missing_key,
)
