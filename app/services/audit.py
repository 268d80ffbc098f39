"""The audit trail: who changed users, API keys and settings, when, from what to what.

`record` adds an event to the caller's session, so it commits (or not) with the change it
describes. Secrets never enter an event: a password appears only as "password changed",
and hashes and keys are not among the fields recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import AuditAction, AuditEvent, AuditTarget, User

PASSWORD_CHANGED = "password changed"  # noqa: S105 - what is shown instead of one
# Fields that are never recorded, whatever their value.
_SECRET_FIELDS = frozenset({"password", "hashed_password", "key", "key_hash", "token"})


def _plain(value: Any) -> Any:
    """A JSON value for `value` (timestamps as ISO 8601, ids and enums as strings)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def diff(
    before: Mapping[str, Any], after: Mapping[str, Any], fields: Iterable[str]
) -> dict[str, list[Any]]:
    """{field: [before, after]} for each of `fields` whose value differs (secrets skipped)."""
    changes: dict[str, list[Any]] = {}
    for name in fields:
        if name in _SECRET_FIELDS:
            continue
        old, new = _plain(before.get(name)), _plain(after.get(name))
        if old != new:
            changes[name] = [old, new]
    return changes


def record(
    session: AsyncSession,
    actor: User | None,
    action: AuditAction,
    target_type: AuditTarget,
    target_id: object,
    changes: dict[str, list[Any]],
) -> AuditEvent:
    """Add an event to `session`: it is saved by the commit that saves the change.

    `actor` None means the command line (no authenticated user)."""
    event = AuditEvent(
        actor_id=actor.id if actor else None,
        actor_email=actor.email if actor else None,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        changes=changes,
    )
    session.add(event)
    return event


async def list_events(
    session: AsyncSession,
    skip: int,
    limit: int,
    *,
    action: AuditAction | None = None,
    target_type: AuditTarget | None = None,
    actor_id: uuid.UUID | None = None,
) -> tuple[list[AuditEvent], int]:
    """A page of events, newest first, and how many match."""
    conditions = []
    if action is not None:
        conditions.append(col(AuditEvent.action) == action)
    if target_type is not None:
        conditions.append(col(AuditEvent.target_type) == target_type)
    if actor_id is not None:
        conditions.append(col(AuditEvent.actor_id) == actor_id)
    count = (
        await session.exec(select(func.count()).select_from(AuditEvent).where(*conditions))
    ).one()
    page = await session.exec(
        select(AuditEvent)
        .where(*conditions)
        .order_by(col(AuditEvent.at).desc(), col(AuditEvent.id))
        .offset(skip)
        .limit(limit)
    )
    return list(page.all()), count
