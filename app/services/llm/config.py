"""Per-provider configuration, built from settings (env) and the chosen model."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from app.core.config import BaseURL


class LMStudioConfig(BaseModel):
    """How to reach an LM Studio server. LM Studio needs no API key."""

    base_url: BaseURL  # LMStudio server URL, e.g. http://localhost:1234/v1
    default_model: str  # Default model name
    max_retries: int = Field(default=3, ge=0, le=10)  # Retry attempts
    timeout: int = Field(default=60, ge=1, le=3600)  # Request timeout in seconds


class OpenAIConfig(BaseModel):
    """How to reach OpenAI (or any server speaking its API with a key)."""

    api_key: SecretStr
    base_url: BaseURL = "https://api.openai.com/v1"
    default_model: str
    max_retries: int = Field(default=3, ge=0, le=10)
    timeout: int = Field(default=60, ge=1, le=3600)
