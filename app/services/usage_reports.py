"""Usage reports: the ledger's rows in a time range, grouped, with totals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import UsageEntry, UsageGroup, UsageGroupBy, UsagePublic, UsageTotals

DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_GROUPS = 1000
NOT_ERRORS = ("ok", "cancelled")


class BadRange(ValueError):
    """A report range that is empty, reversed or too long."""


def report_range(
    since: datetime | None, until: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """[since, until) in UTC: by default the last `DEFAULT_DAYS` days; at most `MAX_DAYS`.

    A time without a zone is taken as UTC. Raises BadRange naming what is wrong.
    """
    until = _utc(until) if until is not None else (now or datetime.now(UTC))
    since = _utc(since) if since is not None else until - timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise BadRange("since must be before until")
    if until - since > timedelta(days=MAX_DAYS):
        raise BadRange(f"the range may span at most {MAX_DAYS} days")
    return since, until


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _group_column(group_by: UsageGroupBy, dialect: str) -> Any:
    created = col(UsageEntry.created_at)
    if group_by == "day":
        if dialect == "postgresql":
            return sa.func.to_char(sa.func.timezone("UTC", created), "YYYY-MM-DD")
        return sa.func.substr(created, 1, 10)  # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS…'
    return {
        "user": col(UsageEntry.user_id),
        "api_key": col(UsageEntry.api_key_id),
        "provider": col(UsageEntry.provider),
        "model": col(UsageEntry.model),
    }[group_by]


def _sums() -> list[Any]:
    errors = sa.case((col(UsageEntry.outcome).in_(NOT_ERRORS), 0), else_=1)
    return [
        sa.func.count().label("requests"),
        sa.func.coalesce(sa.func.sum(col(UsageEntry.prompt_tokens)), 0).label("prompt_tokens"),
        sa.func.coalesce(sa.func.sum(col(UsageEntry.completion_tokens)), 0).label(
            "completion_tokens"
        ),
        sa.func.coalesce(sa.func.sum(errors), 0).label("errors"),
        sa.func.sum(col(UsageEntry.cost)).label("cost"),
    ]


async def usage_report(
    session: AsyncSession,
    group_by: UsageGroupBy,
    since: datetime,
    until: datetime,
    *,
    user_id: uuid.UUID | None = None,
) -> UsagePublic:
    """Calls in [since, until), of `user_id` only if given, grouped by `group_by` (at most
    `MAX_GROUPS` groups, the busiest first; the totals count every call)."""
    created = col(UsageEntry.created_at)
    where = [created >= since, created < until]
    if user_id is not None:
        where.append(col(UsageEntry.user_id) == user_id)
    connection = await session.connection()
    dialect = connection.dialect.name
    key = _group_column(group_by, dialect).label("key")
    order = key if group_by == "day" else sa.desc("requests")
    grouped = sa.select(key, *_sums()).where(*where).group_by(key).order_by(order).limit(MAX_GROUPS)
    groups = [
        UsageGroup(
            key=None if row.key is None else str(row.key),
            requests=row.requests,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            errors=row.errors,
            cost=row.cost,
        )
        for row in (await connection.execute(grouped)).all()
    ]
    total = (await connection.execute(sa.select(*_sums()).where(*where))).one()
    totals = UsageTotals(
        requests=total.requests,
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens,
        errors=total.errors,
        cost=total.cost,
    )
    return UsagePublic(group_by=group_by, since=since, until=until, groups=groups, totals=totals)
