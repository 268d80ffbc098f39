"""Every way an LLM call can fail, each with its HTTP status and a message a user can act on."""

from __future__ import annotations


class LLMError(Exception):
    """Base of all LLM errors. `message` is safe to show to a user; it never holds a secret."""

    status_code: int = 502
    kind: str = "llm_error"
    retryable: bool = False

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider


class LLMConfigurationError(LLMError):
    """The service is not configured for what was asked (unknown provider, no model set)."""

    status_code = 400
    kind = "llm_configuration_error"


class LLMConnectionError(LLMError):
    """The upstream server could not be reached at all."""

    status_code = 503
    kind = "llm_connection_error"
    retryable = True


class LLMNoModelsError(LLMError):
    """The upstream is up but has no model loaded."""

    status_code = 503
    kind = "llm_no_models_error"


class LLMModelNotFoundError(LLMError):
    """The requested model does not exist on the upstream."""

    status_code = 404
    kind = "llm_model_not_found"


class LLMTimeoutError(LLMError):
    """The upstream did not answer within the configured timeout."""

    status_code = 504
    kind = "llm_timeout_error"
    retryable = True


class LLMUpstreamError(LLMError):
    """The upstream answered with an error or with something that is not a valid reply."""

    status_code = 502
    kind = "llm_upstream_error"

    def __init__(
        self, message: str, *, provider: str | None = None, upstream_status: int | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.upstream_status = upstream_status
        self.retryable = upstream_status is not None and upstream_status >= 500


class LLMRateLimitError(LLMUpstreamError):
    """The upstream asked us to slow down (HTTP 429)."""

    status_code = 503
    kind = "llm_rate_limit_error"

    def __init__(
        self, message: str, *, provider: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, provider=provider, upstream_status=429)
        self.retryable = True
        self.retry_after = retry_after


class LLMAuthenticationError(LLMUpstreamError):
    """The upstream rejected our credentials."""

    kind = "llm_authentication_error"


class LLMValidationError(LLMError):
    """Structured output that never validated against the requested model."""

    status_code = 422
    kind = "llm_validation_error"

    def __init__(
        self, message: str, *, provider: str | None = None, raw_text: str, attempts: int
    ) -> None:
        super().__init__(message, provider=provider)
        self.raw_text = raw_text
        self.attempts = attempts


class LLMSettingsUnavailableError(LLMError):
    """The saved LLM settings could not be read (the database is unreachable)."""

    status_code = 503
    kind = "llm_settings_unavailable"


class LLMOverloadedError(LLMError):
    """Too many requests are already running against this upstream; try again shortly."""

    status_code = 429
    kind = "llm_overloaded"

    def __init__(self, message: str, *, provider: str | None = None, retry_after: float) -> None:
        super().__init__(message, provider=provider)
        self.retry_after = retry_after
