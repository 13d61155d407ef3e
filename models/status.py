"""``GET /status``: the whole pipeline in one document."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from engineroom.models.queue import DurationPoint, ErrorCount


class PipelineStatus(BaseModel):
    at: datetime
    #: Every stored job by state.
    totals: dict[str, int]
    #: completed / (completed + failed) over the last hour, every engine; ``None`` with no finished job.
    success_rate_last_hour: float | None
    #: Jobs finished per minute over the last five minutes, every engine.
    jobs_per_minute: float
    #: The longest line of queued jobs, and its engine.
    max_queue_size: int
    max_queue_engine: str | None
    #: Seconds the oldest queued job has waited; ``None`` with none queued.
    oldest_queued_age_s: float | None
    top_errors: list[ErrorCount]
    duration_trend: list[DurationPoint]
