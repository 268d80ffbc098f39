"""What the HTTP layer sends when a stream fails after its first bytes went out."""

from __future__ import annotations

import logging

from app.services.llm.errors import LLMError

logger = logging.getLogger("app.api")


def stream_failure(exc: Exception) -> tuple[str, str]:
    """The error type and message to send in-stream: the LLM error's own, or a generic one
    for a bug (logged with its traceback, never sent)."""
    if isinstance(exc, LLMError):
        return exc.kind, exc.message
    logger.exception("stream failed after it began", exc_info=exc)
    return "internal_error", "Internal server error"
