"""The names of the LLM providers: standard library only, so that the command line can list
them in its help without importing pydantic (`app.core.config` re-exports the enum)."""

from __future__ import annotations

from enum import StrEnum


class LLMProvider(StrEnum):
    """Every LLM provider the service can talk to. Adding one starts here."""

    LMSTUDIO = "lmstudio"
    OPENAI = "openai"
    OPENROUTER = "openrouter"
    OLLAMA = "ollama"
    BEDROCK = "bedrock"
