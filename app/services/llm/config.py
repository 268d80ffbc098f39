"""Per-provider configuration, built from settings (env) and the chosen model."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from app.core.config import BaseURL


class ProviderConfig(BaseModel):
    """What every provider needs: where it is, which model, how patient, how persistent."""

    base_url: BaseURL
    default_model: str  # the model this service answers with (the seed's name for it)
    max_retries: int = Field(default=3, ge=0, le=10)
    timeout: int = Field(default=60, ge=1, le=3600)


class LMStudioConfig(ProviderConfig):
    """How to reach an LM Studio server. LM Studio needs no API key."""

    base_url: BaseURL  # LMStudio server URL, e.g. http://localhost:1234/v1
    default_model: str  # Default model name
    max_retries: int = Field(default=3, ge=0, le=10)  # Retry attempts
    timeout: int = Field(default=60, ge=1, le=3600)  # Request timeout in seconds


class OpenAIConfig(ProviderConfig):
    """How to reach OpenAI (or any server speaking its API with a key)."""

    api_key: SecretStr
    base_url: BaseURL = "https://api.openai.com/v1"


class OpenRouterConfig(OpenAIConfig):
    """OpenRouter: OpenAI's wire with a key, plus optional attribution headers."""

    base_url: BaseURL = "https://openrouter.ai/api/v1"
    app_url: str | None = None  # sent as HTTP-Referer
    app_title: str | None = None  # sent as X-Title


class OllamaConfig(ProviderConfig):
    """An Ollama server, spoken to with its native API (`/api/chat`)."""

    base_url: BaseURL = "http://localhost:11434"
    num_ctx: int | None = Field(default=None, ge=256, le=1_048_576)  # context size to load with
    keep_alive: str | None = None  # how long Ollama keeps the model loaded, e.g. "5m"


class BedrockConfig(ProviderConfig):
    """AWS Bedrock's Converse API; credentials come from the standard AWS chain."""

    region: str
    endpoint_url: BaseURL | None = None  # one URL for runtime and control plane (VPC, tests)
    bearer_token: SecretStr | None = None  # AWS_BEARER_TOKEN_BEDROCK (a Bedrock API key)
