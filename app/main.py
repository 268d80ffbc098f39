"""The FastAPI application: routers, lifespan and middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.direct_routes import direct_routes
from app.api.docs_page import mount_api_docs
from app.api.errors import install_error_handlers
from app.api.limits import BodySizeLimit
from app.api.openai_compat import router as openai_router
from app.api.openai_embeddings import router as embeddings_router
from app.api.shutdown import drain_on_sigterm
from app.api.v1 import api_router
from app.api.v1.llm import router as llm_router
from app.api.web_page import mount_admin_page
from app.core.config import get_settings
from app.core.db import dispose_engine, get_sessionmaker
from app.core.heap import settle_after_startup
from app.services.key_usage import key_usage
from app.services.llm import close_clients
from app.services.llm.settings import SettingsWatcher
from app.services.usage_ledger import usage_writer
from app.services.users import ensure_first_superuser

logger = logging.getLogger("app")


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Create the first admin if absent; drain on SIGTERM; close pooled connections on shutdown."""
    settings = get_settings()
    try:
        async with get_sessionmaker()() as session:
            await ensure_first_superuser(session, settings)
    except Exception as exc:  # keep serving: /health/ready reports the cause
        logger.error(
            "could not create the first admin (%s: %s); is the database reachable and "
            "migrated? run `python -m app migrate`",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
    watcher = None
    if SettingsWatcher.applies_to(settings.database_url):
        watcher = SettingsWatcher(settings.database_url)
        watcher.start()
    drain_on_sigterm(settings.shutdown_drain_seconds)
    usage_writer.start()
    settle_after_startup()
    try:
        yield
    finally:
        if watcher is not None:
            await watcher.stop()
        await usage_writer.stop()  # the ledger's buffered rows, before the engine goes
        await close_clients()
        await key_usage.drain()
        await dispose_engine()


def configure_logging(level: str) -> None:
    """Send the `app.*` loggers to stderr at `level` (LOG_LEVEL=DEBUG shows each LLM call)."""
    app_logger = logging.getLogger("app")
    app_logger.setLevel(level)
    if not app_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        app_logger.addHandler(handler)


_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app() -> FastAPI:
    """Build the application from the current settings."""
    settings = get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="LLM backend",
        summary="One authenticated API over LM Studio and cloud LLMs.",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=None if settings.otel_enabled else _NO_TELEMETRY,
        docs_url=None,  # FastAPI's pages load from a CDN; mount_api_docs serves local copies
        redoc_url=None,
    )
    if settings.backend_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.backend_cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    install_error_handlers(app)
    # The hot routes first, served without per-request dependency solving; their
    # declarations in the routers below are what the OpenAPI document describes.
    app.router.routes.extend(
        [*direct_routes(openai_router), *direct_routes(llm_router, prefix=api_router.prefix)]
    )
    app.include_router(api_router)
    app.include_router(openai_router)
    app.include_router(embeddings_router)
    mount_admin_page(app)
    mount_api_docs(app)
    if settings.metrics_enabled:
        app.add_route("/metrics", _metrics, include_in_schema=False)
    return app


async def _metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
