"""The API docs, /docs (Swagger UI) and /redoc, with their files served by the app itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they stay blank without
internet access. The same pages here point at the copies the `fastapi-offline` package
ships, served under /docs-assets. Each page has a Content-Security-Policy of its own that
allows nothing but this origin (and, for Swagger UI, its one inline start-up script, by
hash); the admin page keeps its stricter policy (app/api/web_page.py).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from app.api.web_page import WithHeaders

ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_COMMON_POLICY = [
    "default-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
]
_ASSET_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),  # revalidated (ETag): an upgrade's files are seen at once
]


def script_hashes(html: str) -> list[str]:
    """CSP sources (`'sha256-…'`) allowing exactly the inline scripts of `html`."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def _policy(html: str, *directives: str) -> str:
    scripts = " ".join(["script-src 'self'", *script_hashes(html)])
    return "; ".join([*_COMMON_POLICY, scripts, *directives])


def _page(html_and_policy: tuple[str, str]) -> HTMLResponse:
    html, policy = html_and_policy
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return HTMLResponse(html, headers=headers)


def mount_api_docs(app: FastAPI) -> None:
    """Serve /docs, its OAuth2 redirect page and /redoc from local files.

    The app must be created with `docs_url=None, redoc_url=None` (FastAPI's CDN pages).
    """
    openapi_url = app.openapi_url
    if openapi_url is None:
        return
    title = app.title

    @lru_cache(maxsize=8)  # one page per root path (behind a proxy that sets one)
    def swagger_page(root: str) -> tuple[str, str]:
        html = _text(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{title} - Swagger UI",
                oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            ).body
        )
        return html, _policy(html, "style-src 'self'")

    @lru_cache(maxsize=8)
    def redoc_page(root: str) -> tuple[str, str]:
        html = _text(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            ).body
        )
        # ReDoc styles itself with <style> elements and searches in a worker made from a blob.
        return html, _policy(html, "style-src 'self' 'unsafe-inline'", "worker-src 'self' blob:")

    redirect_html = _text(get_swagger_ui_oauth2_redirect_html().body)
    redirect_page = redirect_html, _policy(redirect_html)

    async def docs(request: Request) -> HTMLResponse:
        return _page(swagger_page(_root_path(request)))

    async def redoc(request: Request) -> HTMLResponse:
        return _page(redoc_page(_root_path(request)))

    async def oauth2_redirect() -> HTMLResponse:
        return _page(redirect_page)

    app.add_api_route(DOCS_URL, docs, include_in_schema=False)
    app.add_api_route(OAUTH2_REDIRECT_URL, oauth2_redirect, include_in_schema=False)
    app.add_api_route(REDOC_URL, redoc, include_in_schema=False)
    app.mount(
        ASSETS_URL,
        WithHeaders(StaticFiles(directory=ASSETS_DIR), _ASSET_HEADERS),
        name="docs-assets",
    )


def _text(body: bytes | memoryview) -> str:
    return bytes(body).decode()


def _root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
