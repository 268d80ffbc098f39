"""Version 1 of the HTTP API, mounted at /api/v1."""

from fastapi import APIRouter

from app.api.v1 import api_keys, audit, health, llm, llm_settings, login, usage, users

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(login.router)
api_router.include_router(users.router)
api_router.include_router(api_keys.router)
api_router.include_router(llm_settings.router)
api_router.include_router(llm.router)
api_router.include_router(usage.router)
api_router.include_router(health.router)
api_router.include_router(audit.router)
