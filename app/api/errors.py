"""One place that turns exceptions into JSON `{"detail": ...}` responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.services.llm.errors import LLMError, LLMRateLimitError, LLMValidationError

logger = logging.getLogger("app.api")


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes the rejected input back, which may be a password or a key.
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


async def _llm_error(_request: Request, exc: LLMError) -> JSONResponse:
    content: dict[str, object] = {"detail": exc.message, "type": exc.kind}
    if isinstance(exc, LLMValidationError):
        content.update(raw_text=exc.raw_text, attempts=exc.attempts)
    headers = {}
    if isinstance(exc, LLMRateLimitError) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(status_code=exc.status_code, content=content, headers=headers)


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": "Internal server error"})


def install_error_handlers(app: FastAPI) -> None:
    """Register the service's exception handlers on `app`."""
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(LLMError, _llm_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled_error)
