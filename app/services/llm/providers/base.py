"""What every provider module builds on: its entry in the provider mapping (`ProviderSpec`)
and the standard translation of upstream failures into `LLMError`s (`Wire`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import SecretStr

from app.core.config import LLMProvider, Settings
from app.services.llm.config import ProviderConfig
from app.services.llm.errors import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMConfigurationError,
    LLMConnectionError,
    LLMError,
    LLMInvalidRequestError,
    LLMModelNotFoundError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUpstreamError,
)
from app.services.llm.protocol import (
    Capabilities,
    ChatRequest,
    Completion,
    EmbeddingRequest,
    Embeddings,
    ModelInfo,
    ProviderWire,
    StreamChunk,
)
from app.services.llm.providers.clients import connect_timeout, redact_url
from app.services.llm.providers.wire import short_reason

# Upstream answers about the request itself (not auth, which is configuration): the
# caller's mistake, so 400 with the upstream's reason rather than 502.
BAD_REQUEST_STATUSES = frozenset({400, 404, 413, 422})


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything provider-specific that is not wire: one entry of `PROVIDERS` per provider."""

    provider: LLMProvider
    display_name: str
    env_prefix: str
    """Its environment variables start with this: `<PREFIX>_MODEL`, `<PREFIX>_BASE_URL`, …"""
    connection_hint: str
    """What to check when it cannot be reached."""
    local: bool
    """Runs on the admin's own machines: no data leaves them (LM Studio, Ollama)."""
    config_from: Callable[[Settings, str], ProviderConfig]
    """Its config from the env settings and the chosen model."""
    make_wire: Callable[[ProviderSpec, ProviderConfig], ProviderWire]
    credentials_set: Callable[[Settings], bool]
    """Whether a key (or credentials) is configured."""
    missing_credentials: Callable[[Settings], str | None]
    """Why the provider cannot be used with these settings (a missing key), else None."""

    def check(self, settings: Settings) -> None:
        """Raise LLMConfigurationError when the env settings cannot work for this provider."""
        problem = self.missing_credentials(settings)
        if problem is not None:
            raise LLMConfigurationError(problem, provider=self.provider)

    def base_url(self, settings: Settings) -> str:
        """Where it is, without credentials, fit to show to an admin."""
        return redact_url(self.config_from(settings, "-").base_url)


def holds_secret(value: SecretStr | None) -> bool:
    """Whether a key setting holds a key (set, and not empty)."""
    return value is not None and bool(value.get_secret_value())


def needs_no_credentials(_settings: Settings) -> str | None:
    """`missing_credentials` for a provider that needs none."""
    return None


def no_key(_settings: Settings) -> bool:
    """`credentials_set` for a provider that takes no key at all (Ollama)."""
    return False


class Wire:
    """The base of every provider's wire: who it talks to, and the standard errors.

    Messages name the upstream's (redacted) address; `LLMError.public_message` drops it.
    """

    capabilities: Capabilities = Capabilities()

    def __init__(self, spec: ProviderSpec, config: ProviderConfig) -> None:
        self.spec = spec
        self.config = config
        self.model = config.default_model
        self.url = redact_url(config.base_url)

    async def complete(self, request: ChatRequest) -> Completion:  # pragma: no cover
        """One completion, or an LLMError."""
        raise NotImplementedError

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:  # pragma: no cover
        """The completion as it arrives."""
        raise NotImplementedError

    async def list_models(self) -> list[ModelInfo]:  # pragma: no cover
        """The models the upstream offers."""
        raise NotImplementedError

    def embedding_batch(self, model: str) -> int:
        """How many texts one `embed` call may carry."""
        return 1

    async def embed(self, request: EmbeddingRequest) -> Embeddings:  # pragma: no cover
        """Vectors for the texts (only for wires whose capabilities say `embeddings`)."""
        raise NotImplementedError

    def encode(self, body: dict[str, Any]) -> bytes:
        """`body` as JSON, or an LLMInvalidRequestError when it cannot be sent as JSON."""
        try:
            return orjson.dumps(body)
        except TypeError as exc:  # orjson's JSONEncodeError: a lone surrogate, or not JSON
            if "surrogates not allowed" in str(exc):
                raise LLMInvalidRequestError(
                    "The request holds text that is not valid Unicode (a lone UTF-16 "
                    "surrogate such as \\ud800): send well-formed text",
                    provider=self.spec.provider,
                ) from exc
            raise LLMInvalidRequestError(
                f"The request cannot be sent as JSON: {short_reason(str(exc))}",
                provider=self.spec.provider,
            ) from exc

    # ── the standard errors, each with what to do about it ──────────────────

    def connection_error(self) -> LLMConnectionError:
        """The upstream could not be reached at all (retryable)."""
        return LLMConnectionError(
            f"Cannot connect to {self.spec.display_name} at {self.url}: "
            f"{self.spec.connection_hint}.",
            provider=self.spec.provider,
            upstream=self.url,
        )

    def broken_reply_error(self) -> LLMUpstreamError:
        """Connected, but the reply broke off before it was complete (retryable: nothing has
        reached the caller yet)."""
        error = LLMUpstreamError(
            f"{self.spec.display_name} at {self.url} closed the connection before its reply "
            f"was complete (model {self.model})",
            provider=self.spec.provider,
            upstream=self.url,
        )
        error.retryable = True
        return error

    def timeout_error(self, *, accepted: bool) -> LLMTimeoutError:
        """A connect timeout (`accepted=False`, retryable) or a read timeout (not retried:
        the model is probably generating)."""
        name, prefix = self.spec.display_name, self.spec.env_prefix
        if not accepted:
            return LLMTimeoutError(
                f"{name} at {self.url} did not accept a connection within "
                f"{connect_timeout(self.config.timeout):g} s: {self.spec.connection_hint}.",
                accepted=False,
                provider=self.spec.provider,
                upstream=self.url,
            )
        return LLMTimeoutError(
            f"{name} at {self.url} did not answer within {self.config.timeout} s (model "
            f"{self.model}). It accepted the request, so the model is probably still "
            f"generating; it was not sent again. Raise {prefix}_TIMEOUT, ask for fewer tokens "
            "(max_tokens), or use a smaller or faster model.",
            provider=self.spec.provider,
            upstream=self.url,
        )

    def upstream_error(self, message: str, *, retryable: bool = False) -> LLMUpstreamError:
        """A 502 naming this upstream; `message` should say where (`at {self.url}`)."""
        error = LLMUpstreamError(message, provider=self.spec.provider, upstream=self.url)
        error.retryable = retryable
        return error

    def invalid_reply_error(self, what: str = "a reply that is not valid JSON") -> LLMUpstreamError:
        """The upstream answered 2xx with something we cannot read."""
        return LLMUpstreamError(
            f"{self.spec.display_name} at {self.url} returned {what} (model {self.model})",
            provider=self.spec.provider,
            upstream=self.url,
        )

    def status_error(
        self, status: int, message: str, *, retry_after: float | None = None
    ) -> LLMError:
        """The LLMError for an HTTP error status and the upstream's own error text."""
        name, url, provider = self.spec.display_name, self.url, self.spec.provider
        reason = short_reason(message)
        if status in (401, 403):
            # The upstream's own text may quote part of the key we sent, so it is not repeated.
            return LLMAuthenticationError(
                f"{name} at {url} rejected the credentials (HTTP {status}): "
                f"set {self.spec.env_prefix}_API_KEY to a valid key",
                provider=provider,
                upstream=url,
                upstream_status=status,
            )
        if status == 404 and "model" in message.lower():
            return LLMModelNotFoundError(
                f"Model '{self.model}' is not available on {name} at {url}: {reason}",
                provider=provider,
                upstream=url,
            )
        if status == 429:
            return LLMRateLimitError(
                f"{name} at {url} is rate limiting requests (HTTP 429: {reason})",
                provider=provider,
                upstream=url,
                retry_after=retry_after,
            )
        if status in BAD_REQUEST_STATUSES:
            return LLMBadRequestError(
                f"{name} at {url} refused the request (HTTP {status}): {reason}",
                provider=provider,
                upstream=url,
                upstream_status=status,
            )
        return LLMUpstreamError(
            f"{name} at {url} answered HTTP {status}: {reason}",
            provider=provider,
            upstream=url,
            upstream_status=status,
        )

    def stream_broke_off(self, translated: LLMError, exc: Exception, sent: int) -> LLMError:
        """A stream that failed after it began: a timeout stays one; anything else is a
        break-off, retryable while nothing has reached the caller (`sent` text chunks did)."""
        if isinstance(translated, LLMTimeoutError):
            return translated
        error = LLMUpstreamError(
            f"The stream from {self.spec.display_name} at {self.url} broke off after {sent} "
            f"chunks ({type(exc).__name__})",
            provider=self.spec.provider,
            upstream=self.url,
        )
        error.retryable = True
        return error

    def stream_error(self, message: str) -> LLMUpstreamError:
        """An error the upstream reported inside a stream it had answered 200 (OpenRouter's
        `error` chunk, Ollama's `{"error": ...}` line, Bedrock's exception events)."""
        return LLMUpstreamError(
            f"{self.spec.display_name} at {self.url} reported an error mid-stream: "
            f"{short_reason(message)}",
            provider=self.spec.provider,
            upstream=self.url,
        )
