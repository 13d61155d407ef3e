"""``/schedules``: cron schedules that submit a job at every tick, as their owner."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from engineroom.api.deps import PrincipalDep, ScheduleControlDep, ScheduleStoreDep
from engineroom.core.ids import ID_LENGTH
from engineroom.models.schedule import ScheduleCreate, SchedulePage, SchedulePublic

router = APIRouter(prefix="/schedules", tags=["schedules"])

ScheduleId = Annotated[str, Path(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")]


@router.post("", status_code=201, response_model=SchedulePublic)
async def create_schedule(body: ScheduleCreate, control: ScheduleControlDep, who: PrincipalDep) -> SchedulePublic:
    """Create a schedule; its jobs are submitted as you, at every tick of `cron` in `timezone`."""
    return SchedulePublic.from_document(await control.create(body, who))


@router.get("", response_model=SchedulePage)
async def list_schedules(
    schedules: ScheduleStoreDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(min_length=ID_LENGTH, max_length=ID_LENGTH, pattern="^[0-9A-Z]+$")] = None,
) -> SchedulePage:
    """List your schedules (admins: the tenant's), newest first."""
    return await schedules.list_visible(who, limit=limit, cursor=cursor)


@router.get("/{schedule_id}", response_model=SchedulePublic)
async def get_schedule(schedule_id: ScheduleId, schedules: ScheduleStoreDep, who: PrincipalDep) -> SchedulePublic:
    """Read one schedule, with its next fire times."""
    return SchedulePublic.from_document(await schedules.get_visible(schedule_id, who))


@router.delete("/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: ScheduleId, schedules: ScheduleStoreDep, who: PrincipalDep) -> None:
    """Delete a schedule; the jobs it made stay."""
    await schedules.delete_visible(schedule_id, who)


@router.post("/{schedule_id}/pause", response_model=SchedulePublic)
async def pause_schedule(schedule_id: ScheduleId, schedules: ScheduleStoreDep, who: PrincipalDep) -> SchedulePublic:
    """Stop firing until resumed."""
    return SchedulePublic.from_document(await schedules.pause(schedule_id, who))


@router.post("/{schedule_id}/resume", response_model=SchedulePublic)
async def resume_schedule(schedule_id: ScheduleId, control: ScheduleControlDep, who: PrincipalDep) -> SchedulePublic:
    """Fire again from the next tick; ticks that came while paused are not made up for."""
    return SchedulePublic.from_document(await control.resume(schedule_id, who))
