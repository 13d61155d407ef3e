"""``GET /usage``: what ``ctx.record_usage`` added up, per job, user, engine or task, over a time range."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class UsageGrouping(StrEnum):
    JOB = "job"
    USER = "user"
    ENGINE = "engine"
    TASK = "task"


class UsageRow(BaseModel):
    #: The job id, user id, engine or task the row adds up.
    key: str
    jobs: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


class UsageReport(BaseModel):
    since: datetime
    until: datetime
    group_by: UsageGrouping
    #: Highest cost first (at most 200 rows).
    rows: list[UsageRow]
    total: UsageRow
