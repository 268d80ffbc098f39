"""Whether each provider offers the model names an admin saves: warnings, never refusals.

An admin may save a model before downloading it, or while the provider is down, so a save
never waits long for this and never fails because of it.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Mapping

from app.core.config import LLMProvider
from app.services.llm.calls import discover_models
from app.services.llm.errors import LLMError
from app.services.llm.factory import discovery_service
from app.services.llm.providers import PROVIDERS

CHECK_DEADLINE = 3.0  # seconds per provider; they are asked concurrently
SHOWN = 5  # names of offered models a warning suggests


async def model_name_warnings(
    models: Mapping[LLMProvider, str],
    *,
    deadline: float | None = None,
    setting: str = "model",
) -> list[str]:
    """A warning for each model its provider does not offer (with up to five names it does)
    or that could not be checked (the provider unreachable, slow or unconfigured); each
    provider gets `deadline` seconds (default CHECK_DEADLINE). `setting` is the field the
    names were saved in, per provider (`model`, `embedding_model`)."""
    deadline = CHECK_DEADLINE if deadline is None else deadline
    checked = [(provider, model) for provider, model in models.items() if provider in PROVIDERS]
    found = await asyncio.gather(*(_warning(p, m, deadline, setting) for p, m in checked))
    return [warning for warning in found if warning is not None]


async def _warning(provider: LLMProvider, model: str, deadline: float, setting: str) -> str | None:
    spec = PROVIDERS[provider]
    saved = f"{provider.value}_{setting} '{model}' was saved"
    try:
        async with asyncio.timeout(deadline):
            # Everything the provider offers, not only what is loaded: LM Studio's native
            # listing includes downloaded models that are not loaded.
            offered = [info.id for info in await discover_models(discovery_service(provider))]
    except TimeoutError:
        return (
            f"{saved}, but {spec.display_name} did not list its models within {deadline:g} s "
            "to check that it offers it"
        )
    except LLMError as exc:
        return f"{saved}, but {spec.display_name} could not be asked whether it offers it: " + (
            exc.message
        )
    # Ollama answers for "name" with "name:latest", and lists it that way.
    if model in offered or f"{model}:latest" in offered:
        return None
    if not offered:
        return f"{saved}, but {spec.display_name} offers no models at all yet"
    nearest = difflib.get_close_matches(model, offered, n=SHOWN, cutoff=0.0)
    return (
        f"{saved}, but {spec.display_name} does not offer it (download or add it there); "
        f"it offers {len(offered)} models, e.g.: {', '.join(nearest)}"
    )
