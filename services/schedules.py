"""Creating and resuming cron schedules: the changes that need the task registry or the clock."""

from __future__ import annotations

from engineroom.core.clock import utcnow
from engineroom.core.cron import next_fire_after
from engineroom.core.ids import new_id
from engineroom.models.principal import Principal
from engineroom.models.schedule import ScheduleCreate, ScheduleDocument
from engineroom.services.registry import get_task
from engineroom.store.schedules import ScheduleStore


class ScheduleControl:
    def __init__(self, schedules: ScheduleStore) -> None:
        self.schedules = schedules

    async def create(self, body: ScheduleCreate, who: Principal) -> ScheduleDocument:
        """Store a schedule owned by ``who``, first due at its next tick from now.

        Raises:
          InvalidRequest: unknown task, or a payload that does not fit it (checked now, as ``POST /jobs`` does,
            rather than failing at every tick).
        """
        task = get_task(body.task)
        task.validate_payload(body.payload)
        now = utcnow()
        schedule = ScheduleDocument(
            **body.model_dump(exclude={"task"}),
            id=new_id(),
            tenant_id=who.tenant_id,
            user_id=who.user_id,
            task=task.full_name,
            created_at=now,
            next_fire_at=next_fire_after(body.cron, body.timezone, now),
        )
        return await self.schedules.insert(schedule)

    async def resume(self, schedule_id: str, who: Principal) -> ScheduleDocument:
        """Fire a paused schedule again from its next tick after now; ticks missed while paused do not fire.

        Raises:
          NotFound: absent or someone else's.
        """
        schedule = await self.schedules.get_visible(schedule_id, who)
        next_fire_at = next_fire_after(schedule.cron, schedule.timezone, utcnow())
        return await self.schedules.resume(schedule_id, who, next_fire_at=next_fire_at)
