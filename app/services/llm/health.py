"""Each provider's health for the admin page: configured, reachable, latency, model count.

Every provider is asked at once, each with a short deadline, so the answer takes at most
about `timeout` seconds however many providers are down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from app.core.config import LLMProvider, Settings
from app.services.llm.errors import LLMConfigurationError, LLMError
from app.services.llm.factory import build_service
from app.services.llm.providers import PROVIDERS
from app.services.llm.providers.base import needs_no_credentials
from app.services.llm.settings import EffectiveLLMSettings

HEALTH_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """One provider as the admin page shows it."""

    provider: LLMProvider
    display_name: str
    active: bool
    configured: bool
    model: str | None
    base_url: str
    local: bool
    """Runs on the admin's own machines: no data leaves them."""
    needs_key: bool
    """False for a provider used without a key or credentials."""
    key_set: bool
    reachable: bool | None
    """None when the provider was not asked (not configured)."""
    latency_ms: float | None
    """How long listing its models took."""
    model_count: int | None
    error: str | None


async def check_providers(
    settings: Settings,
    effective: EffectiveLLMSettings,
    providers: list[LLMProvider] | None = None,
    *,
    deadline: float | None = None,
) -> list[ProviderHealth]:
    """The health of `providers` (default: every provider), checked concurrently."""
    chosen = providers or list(PROVIDERS)
    deadline = HEALTH_TIMEOUT if deadline is None else deadline
    return list(await asyncio.gather(*(_check(p, settings, effective, deadline) for p in chosen)))


async def _check(
    provider: LLMProvider, settings: Settings, effective: EffectiveLLMSettings, deadline: float
) -> ProviderHealth:
    spec = PROVIDERS[provider]
    model = effective.model_for(provider)

    def health(
        configured: bool,
        reachable: bool | None,
        latency: float | None,
        count: int | None,
        error: str | None,
    ) -> ProviderHealth:
        return ProviderHealth(
            provider=provider,
            display_name=spec.display_name,
            active=effective.provider == provider,
            configured=configured,
            model=model,
            base_url=spec.base_url(settings),
            local=spec.local,
            needs_key=spec.missing_credentials is not needs_no_credentials,
            key_set=spec.credentials_set(settings),
            reachable=reachable,
            latency_ms=latency,
            model_count=count,
            error=error,
        )

    try:
        spec.check(settings)
        service = build_service(provider, model or "-")
    except LLMError as exc:
        return health(False, None, None, None, exc.message)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline):
            count = len(await service.list_models())
    except LLMConfigurationError as exc:
        # Found only when asked (Bedrock's credential chain): not configured, not down.
        return health(False, None, None, None, exc.message)
    except LLMError as exc:
        return health(True, False, None, None, exc.message)
    except TimeoutError:
        message = f"{spec.display_name} did not list its models within {deadline:g} s"
        return health(True, False, None, None, message)
    return health(True, True, round((time.perf_counter() - started) * 1000, 1), count, None)
