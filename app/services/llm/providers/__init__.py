"""Every provider: one module each (its wire and its `SPEC`), and the one mapping of them.

Adding a provider: a value in `LLMProvider`, a module here ending with its `SPEC`, its
entry below, and (for a saved model choice) a `<provider>_model` column with a migration.
"""

from __future__ import annotations

from app.core.config import LLMProvider
from app.services.llm.providers import bedrock, lmstudio, ollama, openai, openrouter
from app.services.llm.providers.base import ProviderSpec

PROVIDERS: dict[LLMProvider, ProviderSpec] = {
    LLMProvider.LMSTUDIO: lmstudio.SPEC,
    LLMProvider.OPENAI: openai.SPEC,
    LLMProvider.OPENROUTER: openrouter.SPEC,
    LLMProvider.OLLAMA: ollama.SPEC,
    LLMProvider.BEDROCK: bedrock.SPEC,
}
