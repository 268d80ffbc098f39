"""One place that turns exceptions into JSON `{"detail": ...}` responses."""

from __future__ import annotations

import logging
import traceback
import uuid

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import caller_is_admin
from app.api.openai_compat import facade_error_response, is_facade, openai_error
from app.core.db import DatabaseUnavailableError, unavailable_reason
from app.services.llm.errors import (
    LLMError,
    LLMLimitError,
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
    waits = LLMRateLimitError | LLMOverloadedError | LLMLimitError
    if isinstance(exc, waits) and exc.retry_after is not None:
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


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    reason = unavailable_reason(exc)
    if reason is None:
        return await _unhandled_error(request, exc)
    request_id = uuid.uuid4().hex
    logger.warning(
        "database unavailable [%s] on %s %s: %s", request_id, request.method, _path(request), reason
    )
    message = f"database unavailable: {reason}"
    if is_facade(request):
        response = openai_error(503, message, "server_error", "database_unavailable")
    else:
        response = JSONResponse(status_code=503, content={"detail": message})
    response.headers["X-Request-ID"] = request_id
    return response


async def _unhandled_error(request: Request, exc: BaseException) -> JSONResponse:
    request_id = _log_unhandled(request, exc)
    if is_facade(request):
        message = f"Internal server error (request id {request_id})"
        response = openai_error(500, message, "server_error")
    else:
        content = {"detail": "Internal server error", "request_id": request_id}
        response = JSONResponse(status_code=500, content=content)
    response.headers["X-Request-ID"] = request_id
    return response


def _log_unhandled(request: Request, exc: BaseException) -> str:
    # Only types and stack frames are logged: an exception's message can quote a statement's
    # values (a database error's DETAIL, a driver's text) and with them hashes or secrets.
    request_id = uuid.uuid4().hex
    logger.error(
        "unhandled error [%s] on %s %s: %s\n%s",
        request_id,
        request.method,
        _path(request),
        _type_name(exc),
        _traceback_without_messages(exc),
    )
    return request_id


def _path(request: Request) -> str:
    # repr: a path is caller text and may hold CR/LF meant to forge log lines.
    return repr(request.url.path[:200])


def _type_name(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def _traceback_without_messages(exc: BaseException) -> str:
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if parts:
            parts.append("raised while handling, or caused by:\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(current.__traceback__))
        code = getattr(current, "sqlstate", None) or getattr(current, "sqlite_errorname", None)
        detail = f"code {code}, message withheld" if code else "message withheld"
        parts.append(f"{_type_name(current)} ({detail})\n")
        current = current.__cause__ or current.__context__
    return "".join(parts).rstrip("\n")


def install_error_handlers(app: FastAPI) -> None:
    """Register the service's exception handlers on `app`."""
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(LLMError, _llm_error)  # type: ignore[arg-type]
    app.add_exception_handler(IntegrityError, _conflict)  # type: ignore[arg-type]
    app.add_exception_handler(DatabaseUnavailableError, _database_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(Exception, _unhandled_error)
    app.add_middleware(AnswerUnhandledErrors)


class AnswerUnhandledErrors:
    """Answers an exception no handler took with `_unhandled_error`'s 500, and stops there.

    Starlette's own last resort (the `Exception` handler above, run by ServerErrorMiddleware)
    answers and then re-raises to the server: uvicorn logs the raw exception text, which for
    a database error quotes the statement's values, and closes the keep-alive connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                # Too late for another answer. Returning with the response unfinished makes
                # the server close the connection, without logging the exception's text.
                _log_unhandled(Request(scope), exc)
                return
            response = await _unhandled_error(Request(scope), exc)
            await response(scope, receive, send)
