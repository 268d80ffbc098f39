"""LM Studio: OpenAI wire protocol, no API key, plus its native model listing."""

from __future__ import annotations

from typing import Any

import openai

from app.core.config import LLMProvider, Settings, get_settings
from app.services.llm.config import LMStudioConfig
from app.services.llm.errors import LLMError, LLMModelNotFoundError, LLMNoModelsError
from app.services.llm.protocol import Capabilities, ModelInfo
from app.services.llm.providers.base import ProviderSpec, needs_no_credentials
from app.services.llm.providers.openai_compatible import OpenAIWire
from app.services.llm.providers.wire import UPSTREAM_FAILURES, short_reason

NO_MODELS_HINT = (
    "load a model in LM Studio (Developer tab, or `lms load <model>`) or enable "
    "just-in-time model loading"
)


class LMStudioWire(OpenAIWire):
    """LM Studio's local server: OpenAI's wire, no API key, its native model listing."""

    # json_object: LM Studio itself answers it with a 400 (the ladder steps down a rung on
    # that), but llama.cpp's server and others behind this provider support it.
    capabilities: Capabilities = Capabilities(
        json_schema=True, json_object=True, context_length=True, loaded_state=True
    )

    def api_key(self) -> str:
        """LMSTUDIO_API_KEY when LM Studio requires authentication; else a placeholder."""
        token = get_settings().lmstudio_api_key
        return token.get_secret_value() if token is not None else "lm-studio"

    async def list_models(self) -> list[ModelInfo]:
        """Models with their state from LM Studio's native API, else from `/v1/models`."""
        native = await self._native_models()
        return native if native is not None else await super().list_models()

    async def _native_models(self) -> list[ModelInfo] | None:
        root = self.config.base_url.removesuffix("/v1")
        try:
            body = await self._client().get(f"{root}/api/v0/models", cast_to=object)
        except openai.APIStatusError as exc:
            if exc.status_code == 404:
                return None  # an older LM Studio, or another OpenAI-compatible server
            raise self.translate(exc) from exc
        except UPSTREAM_FAILURES as exc:
            raise self.translate(exc) from exc
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return None
        return [_model_info(item) for item in body["data"] if isinstance(item, dict)]

    def translate_status(self, status: int, message: str, exc: openai.APIStatusError) -> LLMError:
        """LM Studio's own words for "no model loaded" and "no such model", then the rest."""
        lowered = message.lower()
        if "no models loaded" in lowered or "no model loaded" in lowered:
            return LLMNoModelsError(
                f"LM Studio at {self.url} has no model loaded: {NO_MODELS_HINT}",
                provider=self.spec.provider,
                upstream=self.url,
            )
        unknown_model = "invalid model identifier" in lowered or (
            "model" in lowered and "not found" in lowered
        )
        if status in (400, 404) and unknown_model:
            return LLMModelNotFoundError(
                f"Model '{self.model}' is not available on LM Studio at {self.url} "
                f"({short_reason(message)}); list what is there with "
                "GET /api/v1/llm-settings/lmstudio/models",
                provider=self.spec.provider,
                upstream=self.url,
            )
        return super().translate_status(status, message, exc)


def config_from(settings: Settings, model: str) -> LMStudioConfig:
    """LMSTUDIO_BASE_URL, LMSTUDIO_TIMEOUT, LMSTUDIO_MAX_RETRIES and LMSTUDIO_API_KEY."""
    return LMStudioConfig(
        base_url=settings.lmstudio_base_url,
        default_model=model,
        max_retries=settings.lmstudio_max_retries,
        timeout=settings.lmstudio_timeout,
    )


SPEC = ProviderSpec(
    provider=LLMProvider.LMSTUDIO,
    display_name="LM Studio",
    env_prefix="LMSTUDIO",
    connection_hint=(
        "is LM Studio's server running? Start it in LM Studio (Developer tab) or with "
        "`lms server start`, and check LMSTUDIO_BASE_URL"
    ),
    local=True,
    config_from=config_from,
    make_wire=LMStudioWire,
    credentials_set=lambda settings: settings.lmstudio_api_key is not None,
    missing_credentials=needs_no_credentials,
)


def _model_info(item: dict[str, Any]) -> ModelInfo:
    def text(key: str) -> str | None:
        value = item.get(key)
        return value if isinstance(value, str) else None

    context = item.get("max_context_length")
    return ModelInfo(
        id=str(item.get("id", "")),
        type=text("type"),
        state=text("state"),
        max_context_length=context if isinstance(context, int) else None,
        publisher=text("publisher"),
        quantization=text("quantization"),
    )
