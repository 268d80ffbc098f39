"""The admin page: static files from `web/`, served at /admin with a strict CSP.

The security headers are added by a wrapper around the static-files app only, so the
API's routes pay nothing for them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),  # revalidate: an upgrade's files are seen at once
]


class WithHeaders:
    """ASGI wrapper adding `headers` to every response of `app` (static files, which set
    none of their own security headers)."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_admin_page(app: FastAPI, directory: Path = WEB_DIR) -> None:
    """Serve `directory` at /admin/ and redirect / and /admin there (no-op if it is absent)."""
    if not (directory / "index.html").is_file():
        return

    async def to_page() -> RedirectResponse:
        return RedirectResponse("/admin/", status_code=307)

    app.add_api_route("/", to_page, include_in_schema=False)
    app.add_api_route("/admin", to_page, include_in_schema=False)
    app.mount(
        "/admin", WithHeaders(StaticFiles(directory=directory, html=True), _HEADERS), name="admin"
    )
