"""``GET /usage``: tokens and cost recorded by tasks, added up over a time range."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from engineroom.api.deps import PrincipalDep, UsageTotalsDep
from engineroom.core.clock import utcnow
from engineroom.core.errors import InvalidRequest
from engineroom.models.usage import UsageGrouping, UsageReport, UsageRow
from engineroom.store.visibility import visible_to

router = APIRouter(tags=["operations"])

#: The range a report covers when ``since`` is not given.
DEFAULT_RANGE = timedelta(days=30)


@router.get("/usage", response_model=UsageReport)
async def usage(
    totals: UsageTotalsDep,
    who: PrincipalDep,
    group_by: UsageGrouping = UsageGrouping.ENGINE,
    since: Annotated[datetime | None, Query(description="jobs created from (default: 30 days ago)")] = None,
    until: Annotated[datetime | None, Query(description="jobs created before (default: now)")] = None,
) -> UsageReport:
    """Your jobs' usage (admins: the tenant's) by job, user, engine or task."""
    until = until or utcnow()
    since = since or until - DEFAULT_RANGE
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidRequest("since and until must carry a timezone (e.g. 2026-11-01T00:00:00Z)")
    if since >= until:
        raise InvalidRequest("since must be before until")
    rows = [UsageRow(**row) for row in await totals.sum(visible_to(who), since, until, str(group_by))]
    total = UsageRow(
        key="total",
        jobs=sum(row.jobs for row in rows),
        tokens_in=sum(row.tokens_in for row in rows),
        tokens_out=sum(row.tokens_out for row in rows),
        cost_usd=sum(row.cost_usd for row in rows),
    )
    return UsageReport(since=since, until=until, group_by=group_by, rows=rows, total=total)
