"""Every environment variable the service reads, in one pydantic-settings class."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.providers import LLMProvider as LLMProvider  # re-exported: its usual home

DEFAULT_SECRET_KEY = "insecure-local-development-key-change-me"  # noqa: S105
DEFAULT_SUPERUSER_PASSWORD = "changethis"  # noqa: S105


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    try:
        parts = urlsplit(value)
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if has_credentials:
        # Never echoed: the part before "@" is a password. LM Studio authenticates with a
        # Bearer token (LMSTUDIO_API_KEY), not with Basic credentials in the URL.
        raise ValueError(
            "must not contain a user name or password (user:password@host): put the "
            "token in LMSTUDIO_API_KEY / OPENAI_API_KEY instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must start with http:// or https:// and name a host (got {value!r})")
    return value


BaseURL = Annotated[str, AfterValidator(_http_url)]
"""An http(s) URL without a trailing slash or credentials."""


class Settings(BaseSettings):
    """Service configuration from environment variables and an optional `.env` file.

    Defaults suit a developer machine; production mode refuses default secrets.
    """

    # hide_input_in_errors: a rejected value (a URL with a password, a key) is never echoed.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    environment: Literal["local", "production"] = "local"
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    database_url: str = "sqlite+aiosqlite:///./data/app.db"
    first_superuser_email: str = "admin@example.com"
    first_superuser_password: SecretStr = SecretStr(DEFAULT_SUPERUSER_PASSWORD)
    access_token_expire_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    # How long a worker may reuse a verified credential's user without reading the database.
    # Changes made through this worker apply at once; other workers see them within this.
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Where policy counters live when set (redis://[:password@]host[:port][/db]); by default
    # in the database. Either way they are shared by every worker and replica.
    redis_url: str | None = Field(default=None, pattern=r"^redis://", max_length=500)
    # Login throttling (0 turns a limit off). Attempts are counted per account (the email,
    # whether or not it exists) and per client address in a window that starts with the
    # first failure; past a limit, logins answer 429 until the window ends.
    login_max_failures_per_account: int = Field(default=10, ge=0, le=1_000_000)
    login_max_failures_per_client: int = Field(default=100, ge=0, le=1_000_000)
    login_window_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    # Peers trusted to say who the client is in X-Forwarded-For (uvicorn's syntax: addresses,
    # CIDR networks or "*"). `python -m app serve` hands this to uvicorn, which decides.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    backend_cors_origins: Annotated[list[str], NoDecode] = []
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    llm_provider: LLMProvider = LLMProvider.LMSTUDIO
    lmstudio_base_url: BaseURL = "http://localhost:1234/v1"
    lmstudio_model: str | None = None
    lmstudio_embedding_model: str | None = None
    lmstudio_timeout: int = Field(default=60, ge=1, le=3600)
    lmstudio_max_retries: int = Field(default=3, ge=0, le=10)
    lmstudio_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: BaseURL = "https://api.openai.com/v1"
    openai_model: str | None = None
    openai_embedding_model: str | None = None
    openai_timeout: int = Field(default=60, ge=1, le=3600)
    openai_max_retries: int = Field(default=3, ge=0, le=10)
    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: BaseURL = "https://openrouter.ai/api/v1"
    openrouter_model: str | None = None
    openrouter_embedding_model: str | None = None
    openrouter_timeout: int = Field(default=60, ge=1, le=3600)
    openrouter_max_retries: int = Field(default=3, ge=0, le=10)
    # Sent as OpenRouter's attribution headers (HTTP-Referer, X-Title) when set.
    openrouter_app_url: str | None = Field(default=None, max_length=500)
    openrouter_app_title: str | None = Field(default=None, max_length=200)
    ollama_base_url: BaseURL = "http://localhost:11434"
    ollama_model: str | None = None
    ollama_embedding_model: str | None = None
    ollama_timeout: int = Field(default=60, ge=1, le=3600)
    ollama_max_retries: int = Field(default=3, ge=0, le=10)
    ollama_num_ctx: int | None = Field(default=None, ge=256, le=1_048_576)
    ollama_keep_alive: str | None = Field(default=None, max_length=20)
    bedrock_model: str | None = None
    bedrock_embedding_model: str | None = None
    aws_region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
    # One URL for the runtime and the control plane (a VPC endpoint, or a test's stand-in).
    bedrock_endpoint_url: BaseURL | None = None
    # A Bedrock API key; without it the standard AWS credential chain is used.
    aws_bearer_token_bedrock: SecretStr | None = None
    bedrock_timeout: int = Field(default=60, ge=1, le=3600)
    bedrock_max_retries: int = Field(default=3, ge=0, le=10)
    # The fallback chain until an admin saves one: provider names, in order, and those of
    # them (cloud providers) a local primary may fall back to, which is an explicit opt-in.
    llm_fallback_providers: Annotated[list[LLMProvider], NoDecode] = []
    llm_fallback_allow_cloud: Annotated[list[LLMProvider], NoDecode] = []
    llm_retry_backoff: float = Field(default=0.5, ge=0, le=30)
    llm_max_concurrency: int = Field(default=16, ge=1, le=10_000)
    llm_queue_timeout: float = Field(default=30, ge=0, le=3600)
    llm_max_tokens: int = Field(default=16_384, ge=1)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    metrics_enabled: bool = True
    # The usage ledger (one row per LLM call): rows older than this many days are deleted
    # by a periodic cleanup; 0 keeps them forever.
    usage_retention_days: int = Field(default=90, ge=0, le=36_500)
    # On SIGTERM (`python -m app serve`): readiness turns 503 at once, new requests are still
    # served for SHUTDOWN_DRAIN_SECONDS (load balancers keep routing until they see it), then
    # in-flight requests and streams get the rest of SHUTDOWN_GRACE_SECONDS to finish.
    shutdown_grace_seconds: int = Field(default=30, ge=0, le=3600)
    shutdown_drain_seconds: int = Field(default=5, ge=0, le=600)
    # FastAPI's built-in OpenTelemetry instrumentation. Off unless asked for: deciding per
    # request whether a provider is configured costs several percent of a request's CPU.
    otel_enabled: bool = False

    @field_validator("backend_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("llm_fallback_providers", "llm_fallback_allow_cloud", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip().lower() for name in value.split(",") if name.strip()]
        return value

    @field_validator(
        "lmstudio_model",
        "openai_model",
        "openrouter_model",
        "ollama_model",
        "bedrock_model",
        "lmstudio_embedding_model",
        "openai_embedding_model",
        "openrouter_embedding_model",
        "ollama_embedding_model",
        "bedrock_embedding_model",
        "lmstudio_api_key",
        "openai_api_key",
        "openrouter_api_key",
        "aws_bearer_token_bedrock",
        "openrouter_app_url",
        "openrouter_app_title",
        "ollama_keep_alive",
        "bedrock_endpoint_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _drain_within_grace(self) -> Settings:
        if self.shutdown_drain_seconds > self.shutdown_grace_seconds:
            raise ValueError(
                f"SHUTDOWN_DRAIN_SECONDS ({self.shutdown_drain_seconds:g}) must not exceed "
                f"SHUTDOWN_GRACE_SECONDS ({self.shutdown_grace_seconds:g}): the drain is part "
                "of the grace"
            )
        return self

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        if self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY:
            raise ValueError(
                "SECRET_KEY must be set in production: generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("SECRET_KEY must be at least 32 characters in production")
        if self.first_superuser_password.get_secret_value() == DEFAULT_SUPERUSER_PASSWORD:
            raise ValueError(
                "FIRST_SUPERUSER_PASSWORD must be changed from its default in production"
            )
        return self


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def set_settings(settings: Settings | None) -> None:
    """Replace the process's settings (tests, CLI); None re-reads the environment next time."""
    global _settings
    _settings = settings
