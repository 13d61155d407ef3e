"""Engine queues: the operator's controls (pause, limits) and what ``GET /queues`` shows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engineroom.core.clock import utcnow


class QueueLimits(BaseModel):
    """Body of ``PUT /queues/{engine}/limits``: fields left out stay as they are; ``null`` removes an optional
    limit."""

    model_config = ConfigDict(extra="forbid")

    #: Jobs of the engine running at once across the cluster; 0 lets none start.
    max_concurrency: int | None = Field(None, ge=0, le=10_000)
    #: Job starts per minute across the cluster (AI providers' quotas); null for no limit.
    max_starts_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    #: Jobs of one tenant running at once, so one tenant cannot starve the others; null for no limit.
    max_concurrency_per_tenant: int | None = Field(None, ge=1, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _require_a_field(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data:
            raise ValueError("give at least one of max_concurrency, max_starts_per_minute, max_concurrency_per_tenant")
        if "max_concurrency" in data and data["max_concurrency"] is None:
            raise ValueError("max_concurrency cannot be removed; set 0 to let no job start")
        return data


class PauseRequest(BaseModel):
    """Body of ``POST /queues/{engine}/pause``."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)
    #: When to resume by itself; absent: until someone resumes it.
    until: datetime | None = None

    @model_validator(mode="after")
    def _until_in_the_future(self) -> PauseRequest:
        if self.until is not None:
            if self.until.tzinfo is None:
                raise ValueError("until must carry a timezone (e.g. 2026-11-25T18:00:00Z)")
            if self.until <= utcnow():
                raise ValueError("until must be in the future")
        return self


class SlotHolder(BaseModel):
    """A running job's hold on one of its engine's slots; it lapses at ``expires_at`` unless renewed."""

    job_id: str
    tenant_id: str
    worker_id: str
    expires_at: datetime


class QueueDocument(BaseModel):
    """An engine's controls as stored in the ``queues`` collection (``_id`` is the engine)."""

    engine: str
    paused: bool = False
    paused_by: str | None = None
    paused_at: datetime | None = None
    reason: str | None = None
    until: datetime | None = None
    max_concurrency: int
    max_starts_per_minute: int | None = None
    max_concurrency_per_tenant: int | None = None
    holders: list[SlotHolder] = Field(default_factory=list)
    #: Start times within the rate window, for ``max_starts_per_minute``.
    starts: list[datetime] = Field(default_factory=list)

    def live_holders(self, now: datetime) -> list[SlotHolder]:
        return [holder for holder in self.holders if holder.expires_at > now]

    def start_room(self, now: datetime, rate_window_s: float) -> int:
        """Jobs the engine may start now: 0 while paused, else what concurrency and the rate window leave."""
        if self.paused:
            return 0
        room = self.max_concurrency - len(self.live_holders(now))
        if self.max_starts_per_minute is not None:
            window_start = now - timedelta(seconds=rate_window_s)
            room = min(room, self.max_starts_per_minute - sum(1 for start in self.starts if start > window_start))
        return max(0, room)

    def only_tenant_cap_blocks(self, tenant_id: str, now: datetime, rate_window_s: float) -> bool:
        """Whether, of all the engine's limits, only ``tenant_id``'s cap keeps one of its jobs from starting now."""
        cap = self.max_concurrency_per_tenant
        if cap is None or self.start_room(now, rate_window_s) <= 0:
            return False
        return sum(1 for holder in self.live_holders(now) if holder.tenant_id == tenant_id) >= cap


class ErrorCount(BaseModel):
    """How often one error type failed jobs of one task lately (failure analysis)."""

    engine: str
    task: str
    error_type: str
    last_hour: int
    last_day: int


class DurationPoint(BaseModel):
    """Jobs finished in one hour, and how long they ran."""

    hour: datetime
    finished: int
    p50_duration_s: float | None
    p95_duration_s: float | None


class FailureAnalysis(BaseModel):
    top_errors: list[ErrorCount]
    duration_trend: list[DurationPoint]


class QueueStats(BaseModel):
    """One engine at a glance (``GET /queues``)."""

    engine: str
    paused: bool
    paused_by: str | None
    paused_at: datetime | None
    reason: str | None
    until: datetime | None
    max_concurrency: int
    max_starts_per_minute: int | None
    max_concurrency_per_tenant: int | None
    running: int
    queued: int
    #: Of ``queued``: jobs held back by a limit or a pause (in the engine's line in RabbitMQ, or parked in MongoDB
    #: under a per-tenant cap).
    waiting_for_slot: int
    scheduled: int
    retrying: int
    pending: int
    #: Messages in the engine's RabbitMQ queue (``None`` if RabbitMQ could not be asked).
    broker_depth: int | None
    completed_last_hour: int
    failed_last_hour: int
    #: completed / (completed + failed) over the last hour; ``None`` with no finished job.
    success_rate: float | None
    #: Jobs finished per minute over the last five minutes.
    jobs_per_minute: float
    p50_duration_s: float | None
    p95_duration_s: float | None
    #: ``GET /queues/{engine}`` only: the commonest errors over the last day, and p50/p95 per hour for 24 h.
    top_errors: list[ErrorCount] = Field(default_factory=list)
    duration_trend: list[DurationPoint] = Field(default_factory=list)
