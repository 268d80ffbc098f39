"""OpenRouter: OpenAI's wire with a key, plus what OpenRouter adds to it.

- Attribution headers (`HTTP-Referer`, `X-Title`) when OPENROUTER_APP_URL / _APP_TITLE are set.
- `provider.require_parameters` with every `response_format`: OpenRouter otherwise routes to
  an endpoint that silently ignores the format.
- 402 means the account (or the key's limit) is out of credits: said so, never retried.
- An error during generation arrives inside the 200: a stream event with an `error` object
  and `finish_reason: "error"` (a top-level one is `OpenAIWire`'s in-stream error), or an
  `error` in a non-streamed body.
- Discovery from `GET /models` (context length, structured-output support); `usage.cost`.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

from app.core.config import LLMProvider, Settings
from app.services.llm.config import OpenRouterConfig
from app.services.llm.errors import LLMError, LLMUpstreamError
from app.services.llm.protocol import Capabilities, ChatRequest, ModelInfo, Usage
from app.services.llm.providers.base import ProviderSpec, holds_secret
from app.services.llm.providers.openai_compatible import OpenAIWire, error_text
from app.services.llm.providers.wire import finish_reason_of, first_choice, short_reason

CREDITS_URL = "https://openrouter.ai/settings/credits"
KEYS_URL = "https://openrouter.ai/settings/keys"
_REDACTED = "[redacted]"


class OpenRouterWire(OpenAIWire):
    """OpenRouter's chat-completions API: OpenAI's wire plus routing, errors and discovery."""

    capabilities: Capabilities = Capabilities(
        json_schema=True, json_object=True, context_length=True, embeddings=True
    )

    def extra_headers(self) -> dict[str, str] | None:
        """OpenRouter's app attribution: `HTTP-Referer` (the app's URL) and `X-Title`."""
        config = self.config
        if not isinstance(config, OpenRouterConfig):
            return None
        headers = {
            name: _header_value(value)
            for name, value in (("HTTP-Referer", config.app_url), ("X-Title", config.app_title))
            if value
        }
        return headers or None

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """OpenAI's body; with a response_format, only endpoints that honour it may answer."""
        body = super().body(request)
        if request.response_format is not None:
            body["provider"] = {"require_parameters": True}
        return body

    def usage_in(self, body: object) -> Usage | None:
        """Tokens, and the cost in credits OpenRouter reports as `usage.cost`."""
        usage = super().usage_in(body)
        reported = body.get("usage") if isinstance(body, dict) else None
        cost = reported.get("cost") if isinstance(reported, dict) else None
        if usage is None or isinstance(cost, bool) or not isinstance(cost, int | float):
            return usage
        return dataclasses.replace(usage, cost=float(cost))

    def check_event(self, event: object) -> None:
        """Raise for a stream event that reports a failed generation."""
        reason = _generation_error(event)
        if reason is not None:
            raise self.stream_error(self._scrub(reason))

    def check_reply(self, response: object) -> None:
        """Raise for a 200 body that reports a failed generation instead of a reply."""
        reason = _generation_error(response)
        if reason is not None:
            raise self.upstream_error(
                f"OpenRouter at {self.url} reported an error while generating the reply "
                f"(model {self.model}): {short_reason(self._scrub(reason))}"
            )

    def stream_error(self, message: str) -> LLMUpstreamError:
        """An error OpenRouter reported inside a stream, without our key should it echo it."""
        return super().stream_error(self._scrub(message))

    def translate_status(self, status: int, message: str, retry_after: float | None) -> LLMError:
        """402 (out of credits) in words and not retried; the rest as usual."""
        message = self._scrub(message)
        if status == 402:
            return LLMUpstreamError(
                f"OpenRouter at {self.url} says the account is out of credits (HTTP 402: "
                f"{short_reason(message)}): add credits at {CREDITS_URL}, or raise the "
                "API key's credit limit",
                provider=self.spec.provider,
                upstream=self.url,
                upstream_status=402,
            )
        return super().translate_status(status, message, retry_after)

    async def list_models(self) -> list[ModelInfo]:
        """Every model `GET /models` lists, with its context length and whether it supports
        structured outputs."""
        return [_model_info(item) for item in self.listed(await self.call("GET", "/models"))]

    def _scrub(self, text: str) -> str:
        """`text` without our key, should an upstream ever echo it."""
        key = self.api_key()
        return text.replace(key, _REDACTED) if key else text


def _generation_error(body: object) -> str | None:
    """What went wrong, when a body or event reports a failed generation: an `error`
    at the top or in the first choice, or `finish_reason: "error"`."""
    if not isinstance(body, dict):
        return None
    choice = first_choice(body) or {}
    for error in (body.get("error"), choice.get("error")):
        if error:
            return error_text(error) or "an error without a message"
    if finish_reason_of(choice) == "error":
        return "the generation failed (finish_reason: error)"
    return None


def _header_value(text: str) -> str:
    """`text` fit for an HTTP header: HTTP clients refuse a line break (it would end the
    header) and a character outside ASCII (refused as "not valid Unicode"), which would fail
    every request; so control characters become spaces and the rest is percent-encoded."""
    printable = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return "".join(c if c.isascii() else quote(c) for c in printable.strip())


def _model_info(item: dict[str, Any]) -> ModelInfo:
    context = item.get("context_length")
    parameters = item.get("supported_parameters")
    return ModelInfo(
        id=item["id"],
        max_context_length=(
            context if isinstance(context, int) and not isinstance(context, bool) else None
        ),
        structured_output=(
            "structured_outputs" in parameters if isinstance(parameters, list) else None
        ),
    )


def config_from(settings: Settings, model: str) -> OpenRouterConfig:
    """OPENROUTER_API_KEY, _BASE_URL, _TIMEOUT, _MAX_RETRIES, _APP_URL and _APP_TITLE."""
    return OpenRouterConfig(
        api_key=settings.openrouter_api_key or SecretStr(""),
        base_url=settings.openrouter_base_url,
        default_model=model,
        max_retries=settings.openrouter_max_retries,
        timeout=settings.openrouter_timeout,
        app_url=settings.openrouter_app_url,
        app_title=settings.openrouter_app_title,
    )


def key_set(settings: Settings) -> bool:
    """Whether OPENROUTER_API_KEY holds a key."""
    return holds_secret(settings.openrouter_api_key)


def missing_key(settings: Settings) -> str | None:
    """Why the openrouter provider cannot be used: OPENROUTER_API_KEY is not set."""
    if key_set(settings):
        return None
    return (
        "OPENROUTER_API_KEY is not set: the openrouter provider cannot be used until it is "
        f"(create a key at {KEYS_URL})"
    )


SPEC = ProviderSpec(
    provider=LLMProvider.OPENROUTER,
    display_name="OpenRouter",
    env_prefix="OPENROUTER",
    connection_hint="check OPENROUTER_BASE_URL and this machine's network",
    local=False,
    config_from=config_from,
    make_wire=OpenRouterWire,
    credentials_set=key_set,
    missing_credentials=missing_key,
)
