"""Every way an LLM call can fail, each with its HTTP status and a message a user can act on."""

from __future__ import annotations


class LLMError(Exception):
    """Base of all LLM errors. It never holds a secret.

    `message` is for admins, logs and library callers: it may name the upstream's address
    (`upstream`). `public_message` is the same text without that address, for any user: the
    provider's name and what to do.
    """

    status_code: int = 502
    kind: str = "llm_error"
    retryable: bool = False

    def __init__(
        self, message: str, *, provider: str | None = None, upstream: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.public_message = _without(message, upstream)
        self.provider = provider
        self.upstream = upstream

    def message_for(self, *, admin: bool) -> str:
        """What to tell a caller: the whole message to an admin, the public one to others."""
        return self.message if admin else self.public_message


def _without(message: str, upstream: str | None) -> str:
    if not upstream:
        return message
    return message.replace(f" at {upstream}", "").replace(upstream, "the upstream")


class LLMConfigurationError(LLMError):
    """The service is not configured for what was asked (unknown provider, no model set)."""

    status_code = 400
    kind = "llm_configuration_error"


class LLMFallbackSettingsError(LLMConfigurationError):
    """A fallback chain that cannot be saved: an unknown, repeated or unusable provider, or a
    cloud provider behind a local one without the admin's opt-in."""

    status_code = 422
    kind = "llm_fallback_settings_error"


class LLMInvalidRequestError(LLMError):
    """The caller's request cannot be sent as it is (e.g. text that is not valid Unicode)."""

    status_code = 400
    kind = "invalid_request_error"


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
    """The upstream did not answer within the configured timeout.

    Retryable only if it never accepted the request (a connect timeout): a read timeout
    means the model is working on it, and sending it again would only start over.
    """

    status_code = 504
    kind = "llm_timeout_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        upstream: str | None = None,
        accepted: bool = True,
    ) -> None:
        super().__init__(message, provider=provider, upstream=upstream)
        self.retryable = not accepted


class LLMUpstreamError(LLMError):
    """The upstream answered with an error or with something that is not a valid reply."""

    status_code = 502
    kind = "llm_upstream_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        upstream: str | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider, upstream=upstream)
        self.upstream_status = upstream_status
        self.retryable = upstream_status is not None and upstream_status >= 500


class LLMBadRequestError(LLMUpstreamError):
    """The upstream refused the request itself (HTTP 400, 404, 413, 422): the caller's
    mistake (a malformed response_format, a prompt over the context), so a 400 carrying the
    upstream's reason, not a 502. Still an LLMUpstreamError with its `upstream_status`, so
    that the structured-output ladder steps down a rung on it."""

    status_code = 400
    kind = "invalid_request_error"


class LLMRateLimitError(LLMUpstreamError):
    """The upstream asked us to slow down (HTTP 429)."""

    status_code = 503
    kind = "llm_rate_limit_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        upstream: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, upstream=upstream, upstream_status=429)
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

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        upstream: str | None = None,
        retry_after: float,
    ) -> None:
        super().__init__(message, provider=provider, upstream=upstream)
        self.retry_after = retry_after


class LLMPolicyError(LLMError):
    """The caller's policy (an API key's or a user's, set by an admin) forbids this model."""

    status_code = 403
    kind = "policy_forbidden"


class LLMLimitError(LLMError):
    """A limit of the caller's policy is reached for now; `retry_after`: seconds until the
    window that counts it ends (or a stream ends)."""

    status_code = 429
    kind = "policy_limit_reached"

    def __init__(self, message: str, *, limit: str, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after


class LLMPolicyStoreError(LLMError):
    """The store that keeps policy counts (Redis, `REDIS_URL`) cannot be reached: calls
    under a limit are refused rather than let through uncounted."""

    status_code = 503
    kind = "policy_store_unavailable"
