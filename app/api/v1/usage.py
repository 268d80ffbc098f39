"""Usage reports from the ledger: a user sees their own calls, an admin everyone's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from app.api.deps import CurrentUser, SessionDep
from app.models import UsageGroupBy, UsagePublic
from app.services.usage_reports import BadRange, report_range, usage_report

router = APIRouter(prefix="/usage", tags=["usage"])


@router.get("")
async def read_usage(
    session: SessionDep,
    user: CurrentUser,
    group_by: Annotated[UsageGroupBy, Query(description="How to group the calls")] = "day",
    since: Annotated[
        datetime | None, Query(description="From this time (ISO 8601; default 30 days ago)")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Before this time (ISO 8601; default now)")
    ] = None,
) -> UsagePublic:
    """Requests, tokens, errors and cost of LLM calls in [since, until), grouped, with
    totals; at most 366 days. Rows are written in batches: a call shows here within
    about a second."""
    try:
        start, end = report_range(since, until)
    except BadRange as exc:
        where = ("query", "since")
        raise RequestValidationError(
            [{"loc": where, "msg": str(exc), "type": "value_error"}]
        ) from exc
    return await usage_report(
        session, group_by, start, end, user_id=None if user.is_superuser else user.id
    )
