"""One place that turns exceptions into JSON `{"detail": ...}` responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import caller_is_admin
from app.api.openai_compat import facade_error_response
from app.services.llm.errors import (
    LLMError,
    LLMOverloadedError,
    LLMRateLimitError,
    LLMValidationError,
)

logger = logging.getLogger("app.api")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    if (facade := facade_error_response(request, exc)) is not None:
        return facade
    # FastAPI's default echoes the rejected input back, which may be a password or a key.
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


async def _llm_error(request: Request, exc: LLMError) -> JSONResponse:
    if (facade := facade_error_response(request, exc)) is not None:
        return _with_retry_after(facade, exc)
    message = exc.message_for(admin=caller_is_admin(request))
    content: dict[str, object] = {"detail": message, "type": exc.kind}
    if isinstance(exc, LLMValidationError):
        content.update(raw_text=exc.raw_text, attempts=exc.attempts)
    return _with_retry_after(JSONResponse(status_code=exc.status_code, content=content), exc)


def _with_retry_after(response: JSONResponse, exc: LLMError) -> JSONResponse:
    if isinstance(exc, LLMRateLimitError | LLMOverloadedError) and exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if (facade := facade_error_response(request, exc)) is not None:
        return facade
    return await http_exception_handler(request, exc)


async def _conflict(_request: Request, exc: IntegrityError) -> JSONResponse:
    # Two requests raced past a "does it exist?" check; the database's constraint decided.
    logger.info("integrity error answered as 409: %s", type(exc.orig).__name__)
    return JSONResponse(
        status_code=409,
        content={
            "detail": "This conflicts with an existing record (it may have just been created)"
        },
    )


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": "Internal server error"})


def install_error_handlers(app: FastAPI) -> None:
    """Register the service's exception handlers on `app`."""
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(LLMError, _llm_error)  # type: ignore[arg-type]
    app.add_exception_handler(IntegrityError, _conflict)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled_error)
