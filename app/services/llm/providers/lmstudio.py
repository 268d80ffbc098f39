"""LM Studio: OpenAI wire protocol, no API key, plus its native model listing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.config import LLMProvider, Settings, get_settings
from app.services.llm.config import LMStudioConfig
from app.services.llm.errors import LLMError, LLMModelNotFoundError, LLMNoModelsError
from app.services.llm.protocol import Capabilities, ModelInfo
from app.services.llm.providers.base import ProviderSpec, needs_no_credentials
from app.services.llm.providers.openai_compatible import OpenAIWire, UpstreamRefused
from app.services.llm.providers.wire import short_reason

NO_MODELS_HINT = (
    "load a model in LM Studio (Developer tab, or `lms load <model>`) or enable "
    "just-in-time model loading"
)


class LMStudioWire(OpenAIWire):
    """LM Studio's local server: OpenAI's wire, no API key, its native model listing."""

    # json_object: LM Studio itself answers it with a 400 (the ladder steps down a rung on
    # that), but llama.cpp's server and others behind this provider support it.
    capabilities: Capabilities = Capabilities(
        json_schema=True,
        json_object=True,
        context_length=True,
        loaded_state=True,
        tool_use_listed=True,
        embeddings=True,
    )
    # LM Studio's /v1/embeddings answers with the model's own size whatever is asked.
    embedding_dimensions = False

    def api_key(self) -> str:
        """LMSTUDIO_API_KEY when LM Studio requires authentication; else a placeholder."""
        token = get_settings().lmstudio_api_key
        return token.get_secret_value() if token is not None else "lm-studio"

    async def list_models(self) -> list[ModelInfo]:
        """Every downloaded model with its state: from LM Studio's REST API v1 (0.4 and
        later), else its REST API v0 (0.3.6 and later), else OpenAI's `/v1/models` (older
        servers and other OpenAI-compatible ones, which list no state)."""
        for path, read in (("/api/v1/models", _models_v1), ("/api/v0/models", _models_v0)):
            models = await self._native_models(path, read)
            if models is not None:
                return models
        return await super().list_models()

    async def _native_models(
        self, path: str, read: Callable[[object], list[ModelInfo] | None]
    ) -> list[ModelInfo] | None:
        """The listing at `path`, or None when this server does not serve it."""
        root = self.config.base_url.removesuffix("/v1")
        try:
            body = await self.fetch("GET", f"{root}{path}")
        except UpstreamRefused as exc:
            if exc.status in (404, 405):
                return None  # an older LM Studio, or another OpenAI-compatible server
            raise self.translate(exc) from None
        # LM Studio 0.3 answers paths it lacks with HTTP 200 and {"error": "Unexpected
        # endpoint or method. ..."}; `read` finds no listing in that, nor in anything else.
        return read(body)

    def translate_status(self, status: int, message: str, retry_after: float | None) -> LLMError:
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
        return super().translate_status(status, message, retry_after)


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


def _models_v1(body: object) -> list[ModelInfo] | None:
    """`GET /api/v1/models`: {"models": [{"type", "publisher", "key", "quantization": {"name"},
    "max_context_length", "loaded_instances": [...], ...}]}."""
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        return None
    found = []
    for item in models:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            continue
        quantization = item.get("quantization")
        capabilities = item.get("capabilities")
        trained = (
            capabilities.get("trained_for_tool_use") if isinstance(capabilities, dict) else None
        )
        found.append(
            ModelInfo(
                id=item["key"],
                type=_text(item, "type"),
                state="loaded" if item.get("loaded_instances") else "not-loaded",
                max_context_length=_number(item, "max_context_length"),
                publisher=_text(item, "publisher"),
                quantization=_text(quantization, "name")
                if isinstance(quantization, dict)
                else None,
                tool_use=trained if isinstance(trained, bool) else None,
            )
        )
    return found


def _models_v0(body: object) -> list[ModelInfo] | None:
    """`GET /api/v0/models`: {"data": [{"id", "type", "state", "max_context_length",
    "publisher", "quantization"}]}."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [
        ModelInfo(
            id=str(item.get("id", "")),
            type=_text(item, "type"),
            state=_text(item, "state"),
            max_context_length=_number(item, "max_context_length"),
            publisher=_text(item, "publisher"),
            quantization=_text(item, "quantization"),
            tool_use="tool_use" in item["capabilities"]
            if isinstance(item.get("capabilities"), list)
            else None,
        )
        for item in data
        if isinstance(item, dict)
    ]


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) else None


def _number(item: dict[str, Any], key: str) -> int | None:
    value = item.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
