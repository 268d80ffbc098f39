"""Refuse request bodies over MAX_REQUEST_BYTES with 413, before they are read into memory."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.openai_compat import is_facade, openai_error


class BodySizeLimit:
    """Pure ASGI middleware (no per-request overhead beyond a header check and a counter).

    A declared Content-Length over the limit is answered at once. A body without one
    (chunked) is counted as the app reads it; the read that crosses the limit raises a 413
    HTTPException, which FastAPI passes on to the app's handlers (any other exception raised
    while it reads the body would become a 400 "error parsing the body").
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(scope)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, self._message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            # Only where nothing handled it (a body read outside FastAPI's request parsing).
            if not started:
                await self._too_large(scope)(scope, receive, send)

    def _message(self) -> str:
        return f"Request body is larger than {self.max_bytes} bytes (MAX_REQUEST_BYTES)"

    def _too_large(self, scope: Scope) -> JSONResponse:
        if is_facade(Request(scope)):
            return openai_error(413, self._message(), "invalid_request_error")
        return JSONResponse(status_code=413, content={"detail": self._message()})


class _TooLarge(HTTPException):
    pass
