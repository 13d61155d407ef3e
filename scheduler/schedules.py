"""Firing cron schedules: claim each due tick once (store/schedules.py), then submit its job as the schedule's owner.

Jobs go through ``JobSubmitter``, the path ``POST /jobs`` takes, so a scheduled job is checked, stored, sent and
announced exactly like a submitted one. Its idempotency key names the schedule and the tick: submitting a tick
twice (a claimer that died after storing the job, a stale leader finishing late) returns the first job.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from pydantic import ValidationError

from engineroom.core.cron import SKIP_GRACE_S, plan_firing
from engineroom.core.errors import InvalidRequest
from engineroom.models.schedule import MissedTicks, ScheduleDocument
from engineroom.services.submission import JobSubmitter
from engineroom.store.schedules import ScheduleStore

logger = logging.getLogger(__name__)

#: Schedules one sweep handles at most; the next sweep takes the rest.
SWEEP_BATCH = 200
#: A claimed tick whose job is still not recorded this long after is submitted again (its claimer died).
PENDING_FIRE_GRACE_S = 10.0


def idempotency_key(schedule_id: str, tick: datetime) -> str:
    """The key of the one job a schedule's tick may make."""
    return f"schedule:{schedule_id}:{tick.isoformat()}"


class ScheduleFirer:
    """Fires due schedules: at most one job per sweep and schedule, and one per tick across all schedulers."""

    def __init__(self, schedules: ScheduleStore, submitter: JobSubmitter, *, grace_s: float = SKIP_GRACE_S) -> None:
        self.schedules = schedules
        self.submitter = submitter
        #: How late a ``skip`` schedule's tick may be and still fire.
        self.grace_s = grace_s

    async def fire_due(self, now: datetime) -> None:
        """Fire every schedule due at ``now`` whose tick this scheduler claims, then finish ticks whose claimer
        died before their job was recorded."""
        for schedule in await self.schedules.due(now, SWEEP_BATCH):
            await self.fire(schedule, now)
        claimed_before = now - timedelta(seconds=PENDING_FIRE_GRACE_S)
        for schedule in await self.schedules.stale_pending(claimed_before, SWEEP_BATCH):
            if schedule.pending_fire is not None:
                logger.warning("schedule %s: submitting tick %s again", schedule.id, schedule.pending_fire.tick)
                await self._submit(schedule, schedule.pending_fire.tick)

    async def fire(self, schedule: ScheduleDocument, now: datetime) -> None:
        """Fire ``schedule``, due at ``now``, as the caller read it: nothing if its tick was claimed since (by
        another scheduler, or this one before it was a stale leader) or it was paused or deleted meanwhile."""
        catch_up = schedule.missed == MissedTicks.RUN_ONCE
        try:
            firing = plan_firing(
                schedule.cron, schedule.timezone, schedule.next_fire_at, now, catch_up=catch_up, grace_s=self.grace_s
            )
        except (ValueError, RuntimeError) as exc:  # validated on create: only a changed tz database or croniter
            logger.error("schedule %s has no next tick any more; pausing it: %s", schedule.id, exc)
            await self.schedules.pause_broken(schedule.id, f"paused by the scheduler: {exc}")
            return
        claimed = await self.schedules.claim_tick(
            schedule.id, expected=schedule.next_fire_at, next_fire_at=firing.next_fire_at, tick=firing.tick, now=now
        )
        if not claimed:
            return  # another scheduler fired it, or it was paused or deleted meanwhile
        if firing.tick is None:
            logger.info("schedule %s: dropped due ticks more than %.0f s late", schedule.id, self.grace_s)
            return
        await self._submit(schedule, firing.tick)

    async def _submit(self, schedule: ScheduleDocument, tick: datetime) -> None:
        try:
            job, _ = await self.submitter.submit(
                schedule.job_submit(tick), schedule.owner, idempotency_key(schedule.id, tick)
            )
        except (InvalidRequest, ValidationError) as exc:  # its task is gone or its payload no longer fits
            error = exc.detail if isinstance(exc, InvalidRequest) else str(exc)
            logger.warning("schedule %s: tick %s made no job: %s", schedule.id, tick, error)
            await self.schedules.record_fired(schedule.id, tick, job_id=None, error=error)
            return
        logger.info("schedule %s: tick %s submitted job %s", schedule.id, tick, job.id)
        await self.schedules.record_fired(schedule.id, tick, job_id=job.id, error=None)
