"""The audit trail (admin only)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.deps import SessionDep, require_admin
from app.api.paging import Limit, Skip
from app.models import AuditAction, AuditEventPublic, AuditEventsPublic, AuditTarget
from app.services import audit as audit_service

router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[Depends(require_admin)])


@router.get("")
async def list_audit_events(
    session: SessionDep,
    skip: Skip = 0,
    limit: Limit = 100,
    action: Annotated[AuditAction | None, Query(description="Only this action")] = None,
    target_type: Annotated[
        AuditTarget | None, Query(description="Only changes to this kind of thing")
    ] = None,
    actor: Annotated[uuid.UUID | None, Query(description="Only changes by this user")] = None,
) -> AuditEventsPublic:
    """Who changed users, API keys and settings, when, from what to what; newest first
    (admin only). `changes` maps each field to `[before, after]`; secrets are never
    recorded (a new password shows as "password changed")."""
    rows, count = await audit_service.list_events(
        session, skip, limit, action=action, target_type=target_type, actor_id=actor
    )
    return AuditEventsPublic(data=[AuditEventPublic.model_validate(e) for e in rows], count=count)
