"""Cron schedules: the create body, the stored document, the public view and a page of them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from engineroom.core.cron import SKIP_GRACE_S, check_cron, next_fire_times, parse_timezone
from engineroom.models.job import PRIORITY_NAMES, JobSpec, JobSubmit
from engineroom.models.principal import Principal

#: How many upcoming fire times ``SchedulePublic`` lists.
UPCOMING_FIRE_TIMES = 5


class MissedTicks(StrEnum):
    """What a schedule does about ticks that came while no scheduler could fire them (all down, or paused)."""

    #: Fire a due tick only while it is at most ``SKIP_GRACE_S`` (60 s) late; drop older ones.
    SKIP = "skip"
    #: Fire once for the latest missed tick, however late, then go on as usual.
    RUN_ONCE = "run_once"


class ScheduleCreate(JobSpec):
    """Body of ``POST /schedules``: a cron expression, a timezone and the job (``JobSpec``) to submit at each tick;
    the job is built and checked again at each tick."""

    name: str | None = Field(None, min_length=1, max_length=200)
    cron: str = Field(
        min_length=1,
        max_length=200,
        description="5 fields: minute hour day-of-month month day-of-week",
        examples=["0 9 * * mon-fri"],
    )
    timezone: str = Field("UTC", min_length=1, max_length=100, description="IANA name, e.g. `Europe/Berlin`")
    missed: MissedTicks = Field(
        MissedTicks.SKIP,
        description=f"`skip`: drop ticks more than {SKIP_GRACE_S:.0f} s late; `run_once`: fire once for missed ticks",
    )

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value


class PendingFire(BaseModel):
    """A tick claimed but whose job is not known to be stored yet; a later sweep submits it again if it stays."""

    tick: datetime
    claimed_at: datetime


class _ScheduleFields(BaseModel):
    id: str
    tenant_id: str
    user_id: str
    name: str | None = None
    cron: str
    timezone: str
    missed: MissedTicks
    task: str
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = PRIORITY_NAMES["normal"]
    max_retries: int | None = None
    timeout_s: float | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    paused: bool = False
    created_at: datetime
    #: The tick the latest job was submitted for, and that job.
    last_fired_at: datetime | None = None
    last_job_id: str | None = None
    #: Why the latest tick made no job (its task is gone, its payload no longer fits), until a tick succeeds.
    last_error: str | None = None


class ScheduleDocument(_ScheduleFields):
    """A schedule as stored in the ``schedules`` collection; only store/ and the scheduler handle it."""

    #: The next tick to fire; the scheduler moves it with a conditional write, so each tick is claimed once.
    next_fire_at: datetime
    pending_fire: PendingFire | None = None

    @property
    def owner(self) -> Principal:
        """Who the schedule's jobs are submitted as (no roles: a job is its owner's, whoever made it)."""
        return Principal(user_id=self.user_id, tenant_id=self.tenant_id)

    def job_submit(self, tick: datetime) -> JobSubmit:
        """The job to submit for ``tick``, its metadata naming the schedule and the tick.

        Raises:
          pydantic.ValidationError: the stored job fields no longer make a valid submit.
        """
        metadata = {**self.metadata, "schedule_id": self.id, "schedule_tick": tick.isoformat()}
        return JobSubmit(
            task=self.task,
            payload=self.payload,
            priority=self.priority,
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
            tags=self.tags,
            metadata=metadata,
        )


class SchedulePublic(_ScheduleFields):
    """A schedule as the API shows it."""

    #: The next fire times (UTC); empty while paused, since a paused schedule fires nothing.
    next_fire_times: list[datetime]

    @classmethod
    def from_document(cls, document: ScheduleDocument) -> SchedulePublic:
        upcoming: list[datetime] = []
        if not document.paused:
            later = next_fire_times(document.cron, document.timezone, document.next_fire_at, UPCOMING_FIRE_TIMES - 1)
            upcoming = [document.next_fire_at, *later]
        fields = document.model_dump(exclude={"next_fire_at", "pending_fire"})
        return cls.model_validate({**fields, "next_fire_times": upcoming})


class SchedulePage(BaseModel):
    """One page of ``GET /schedules``, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[SchedulePublic]
    next_cursor: str | None = None
