"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.shutdown import draining
from app.core.schema_revisions import current_revision, head_revision, known_revisions

router = APIRouter(prefix="/health", tags=["health"])


@router.get("")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready() -> dict[str, str] | JSONResponse:
    """The database answers and its schema is current (or newer: a rolling update); 503
    naming the reason otherwise, and from the moment the process got SIGTERM (draining)."""
    if draining():
        return JSONResponse(status_code=503, content={"detail": "shutting down"})
    try:
        async with asyncio.timeout(5):
            revision = await current_revision()
    except Exception as exc:  # any driver error means "not ready"
        reason = f"database unreachable ({type(exc).__name__})"
        return JSONResponse(status_code=503, content={"detail": reason})
    expected = head_revision()
    if revision is not None and revision != expected and revision not in known_revisions():
        # A newer release has migrated ahead (a rolling update): its migrations keep the
        # schema usable by the release before, so this one stays in service until replaced.
        return {"status": "ready", "database": "ok", "schema": f"{revision} (newer)"}
    if revision != expected:
        reason = (
            f"database schema is at {revision or 'nothing'}, expected {expected}: "
            "run `python -m app migrate`"
        )
        return JSONResponse(status_code=503, content={"detail": reason})
    return {"status": "ready", "database": "ok", "schema": str(revision)}
