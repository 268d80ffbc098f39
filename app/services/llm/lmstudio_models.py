"""Loading and unloading LM Studio models through its native REST API (LM Studio >= 0.4).

LM Studio answers a load request for a model that is already loaded by loading a second
instance of it, so `load_model` reads the loaded instances first and loads only when there
are none. Older servers lack `/api/v1/models`: they answer 404 or, like LM Studio 0.3, HTTP
200 with `{"error": "Unexpected endpoint or method. ..."}`; both become `LMStudioTooOldError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.core.config import get_settings
from app.services.llm.calls import ProviderService, clear_discovery_cache
from app.services.llm.errors import LLMModelNotFoundError, LLMUpstreamError
from app.services.llm.providers.lmstudio import LMStudioWire
from app.services.llm.providers.openai_compatible import UpstreamRefused

LOAD_TIMEOUT_FLOOR = 300.0  # seconds: a large model takes minutes to load from disk


class LMStudioTooOldError(LLMUpstreamError):
    """The LM Studio server has no REST API v1 (it is older than 0.4, or not LM Studio)."""

    kind = "lmstudio_too_old"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load request did."""

    model: str
    status: Literal["loaded", "already-loaded"]
    instance_ids: list[str]
    load_time_seconds: float | None


@dataclass(frozen=True, slots=True)
class UnloadResult:
    """What an unload request did."""

    model: str
    status: Literal["unloaded", "not-loaded"]
    instance_ids: list[str]


def _wire(llm: ProviderService) -> LMStudioWire:
    wire = llm.wire
    if not isinstance(wire, LMStudioWire):
        raise TypeError(f"model management needs the LM Studio provider, not {llm.provider}")
    return wire


async def loaded_instances(llm: ProviderService) -> dict[str, list[str]]:
    """Every downloaded model's key with the ids of its loaded instances."""
    return await _loaded_instances(_wire(llm))


async def _loaded_instances(service: LMStudioWire) -> dict[str, list[str]]:
    body = await _call(service, "GET", "/api/v1/models", None, wait=None, probe=True)
    models = body.get("models")
    if not isinstance(models, list):
        raise _too_old(service)
    instances: dict[str, list[str]] = {}
    for entry in models:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            continue
        loaded = entry.get("loaded_instances")
        instances[entry["key"]] = [
            item["id"]
            for item in (loaded if isinstance(loaded, list) else [])
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]
    return instances


async def load_model(
    llm: ProviderService, model: str, *, context_length: int | None, ttl: int | None
) -> LoadResult:
    """Load `model` unless an instance of it is loaded already."""
    service = _wire(llm)
    instances = await _loaded_instances(service)
    if model not in instances:
        raise _not_downloaded(service, model, instances)
    if instances[model]:
        return LoadResult(model, "already-loaded", instances[model], None)
    payload: dict[str, Any] = {"model": model}
    if context_length is not None:
        payload["context_length"] = context_length
    if ttl is not None:
        # LM Studio's idle TTL ("ttl" in a request's payload, docs: Idle TTL and Auto-Evict);
        # the load endpoint's own page does not list it, so it is sent only when asked for.
        payload["ttl"] = ttl
    timeout = max(float(get_settings().lmstudio_timeout), LOAD_TIMEOUT_FLOOR)
    body = await _call(service, "POST", "/api/v1/models/load", payload, wait=timeout)
    clear_discovery_cache()
    instance = body.get("instance_id", body.get("model_instance_id"))
    seconds = body.get("load_time_seconds")
    return LoadResult(
        model,
        "loaded",
        [instance] if isinstance(instance, str) else [],
        float(seconds) if isinstance(seconds, int | float) else None,
    )


async def unload_model(llm: ProviderService, model: str) -> UnloadResult:
    """Unload every loaded instance of `model`."""
    service = _wire(llm)
    instances = await _loaded_instances(service)
    if model not in instances:
        raise _not_downloaded(service, model, instances)
    for instance in instances[model]:
        await _call(service, "POST", "/api/v1/models/unload", {"instance_id": instance}, wait=None)
    clear_discovery_cache()
    return UnloadResult(model, "unloaded" if instances[model] else "not-loaded", instances[model])


async def _call(
    service: LMStudioWire,
    method: Literal["GET", "POST"],
    path: str,
    payload: dict[str, Any] | None,
    *,
    wait: float | None,
    probe: bool = False,
) -> dict[str, Any]:
    """One call to LM Studio's REST API; with `probe`, a 404 means the API is missing."""
    url = service.config.base_url.removesuffix("/v1") + path
    try:
        body = await service.fetch(method, url, payload, read_timeout=wait)
    except UpstreamRefused as exc:
        if probe and exc.status in (404, 405):
            raise _too_old(service) from None
        if exc.status in (401, 403, 429):
            raise service.translate(exc) from None  # the key, or slow down: said as for chat
        raise LLMUpstreamError(
            f"LM Studio at {service.url} answered {path} with HTTP {exc.status}: {exc.message}",
            provider=service.spec.provider,
            upstream_status=exc.status,
        ) from None
    if not isinstance(body, dict):
        raise _too_old(service)
    said = body.get("error")
    if isinstance(said, str) and "unexpected endpoint" in said.lower():
        raise _too_old(service)
    if isinstance(said, str | dict):
        text = said if isinstance(said, str) else str(said.get("message", said))
        raise LLMUpstreamError(
            f"LM Studio at {service.url} refused {path}: {text}", provider=service.spec.provider
        )
    return body


def _too_old(service: LMStudioWire) -> LMStudioTooOldError:
    return LMStudioTooOldError(
        f"LM Studio at {service.url} has no model-management API: this LM Studio is older "
        "than 0.4 (or not LM Studio). Load the model in LM Studio's app (Developer tab) or "
        "with `lms load <model>`, or update LM Studio.",
        provider=service.spec.provider,
    )


def _not_downloaded(
    service: LMStudioWire, model: str, instances: dict[str, list[str]]
) -> LLMModelNotFoundError:
    known = ", ".join(list(instances)[:5]) or "none"
    return LLMModelNotFoundError(
        f"Model '{model}' is not downloaded in LM Studio at {service.url} (models there: "
        f"{known}); download it in LM Studio or with `lms get {model}`",
        provider=service.spec.provider,
    )
