"""ScheduleStore on mongomock-motor: visibility, paging, pause/resume, and claiming each tick once."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient

from engineroom.core.clock import utcnow
from engineroom.core.errors import NotFound
from engineroom.core.ids import new_id
from engineroom.models.principal import ADMIN_ROLE, Principal
from engineroom.models.schedule import MissedTicks, ScheduleDocument
from engineroom.store.client import Database, ensure_indexes
from engineroom.store.schedules import ScheduleStore

ALICE = Principal(user_id="alice", tenant_id="acme")
BOB = Principal(user_id="bob", tenant_id="acme")
ACME_ADMIN = Principal(user_id="root", tenant_id="acme", roles=(ADMIN_ROLE,))
MALLORY = Principal(user_id="alice", tenant_id="evil")


def make_schedule(owner: Principal = ALICE, **fields: Any) -> ScheduleDocument:
    now = utcnow()
    defaults: dict[str, Any] = {
        "id": new_id(),
        "tenant_id": owner.tenant_id,
        "user_id": owner.user_id,
        "cron": "0 * * * *",
        "timezone": "UTC",
        "missed": MissedTicks.SKIP,
        "task": "general.demo",
        "created_at": now,
        "next_fire_at": now + timedelta(minutes=30),
    }
    return ScheduleDocument(**{**defaults, **fields})


@pytest.fixture
async def schedules() -> ScheduleStore:
    db: Database = AsyncMongoMockClient(tz_aware=True)["test"]
    await ensure_indexes(db, retention_days=30)
    return ScheduleStore(db)


async def test_an_inserted_schedule_reads_back_equal(schedules: ScheduleStore) -> None:
    schedule = await schedules.insert(make_schedule(payload={"steps": 2}, tags=["nightly"], name="n"))
    assert await schedules.get_visible(schedule.id, ALICE) == schedule


async def test_only_the_owner_and_the_tenants_admins_see_a_schedule(schedules: ScheduleStore) -> None:
    schedule = await schedules.insert(make_schedule())
    assert (await schedules.get_visible(schedule.id, ACME_ADMIN)).id == schedule.id
    for stranger in (BOB, MALLORY):
        with pytest.raises(NotFound):
            await schedules.get_visible(schedule.id, stranger)
        with pytest.raises(NotFound):
            await schedules.pause(schedule.id, stranger)
        with pytest.raises(NotFound):
            await schedules.resume(schedule.id, stranger, next_fire_at=utcnow())
        with pytest.raises(NotFound):
            await schedules.delete_visible(schedule.id, stranger)
    assert not (await schedules.get_visible(schedule.id, ALICE)).paused


async def test_listing_pages_newest_first_and_shows_next_fire_times(schedules: ScheduleStore) -> None:
    ids = [(await schedules.insert(make_schedule(id=new_id(now_ms=1_000 + n)))).id for n in range(5)]
    await schedules.insert(make_schedule(BOB))
    first = await schedules.list_visible(ALICE, limit=3)
    assert [item.id for item in first.items] == ids[::-1][:3] and first.next_cursor == ids[2]
    rest = await schedules.list_visible(ALICE, limit=3, cursor=first.next_cursor)
    assert [item.id for item in rest.items] == ids[1::-1] and rest.next_cursor is None
    assert len((await schedules.list_visible(ACME_ADMIN)).items) == 6
    times = first.items[0].next_fire_times  # its next_fire_at, then the four hourly ticks after it
    assert len(times) == 5 and times[0] == first.items[0].created_at + timedelta(minutes=30)
    assert all(later - earlier == timedelta(hours=1) for earlier, later in pairwise(times[1:]))
    assert times[1].minute == 0 and times[1] - times[0] <= timedelta(hours=1)


async def test_pause_stops_the_due_query_and_resume_sets_the_next_tick(schedules: ScheduleStore) -> None:
    now = utcnow()
    schedule = await schedules.insert(make_schedule(next_fire_at=now - timedelta(seconds=1)))
    assert [due.id for due in await schedules.due(now, 10)] == [schedule.id]
    assert (await schedules.pause(schedule.id, ALICE)).paused
    assert (await schedules.pause(schedule.id, ALICE)).paused  # again: no change, no error
    assert await schedules.due(now, 10) == []
    later = now + timedelta(hours=1)
    resumed = await schedules.resume(schedule.id, ALICE, next_fire_at=later)
    assert not resumed.paused and resumed.next_fire_at == later
    # Resuming a running schedule keeps its times
    assert (await schedules.resume(schedule.id, ALICE, next_fire_at=now)).next_fire_at == later


async def test_a_tick_is_claimed_once(schedules: ScheduleStore) -> None:
    now = utcnow()
    due = now - timedelta(seconds=1)
    schedule = await schedules.insert(make_schedule(next_fire_at=due))
    later = now + timedelta(hours=1)
    assert await schedules.claim_tick(schedule.id, expected=due, next_fire_at=later, tick=due, now=now)
    assert not await schedules.claim_tick(schedule.id, expected=due, next_fire_at=later, tick=due, now=now)
    claimed = await schedules.get_visible(schedule.id, ALICE)
    assert claimed.next_fire_at == later and claimed.last_fired_at == due
    assert claimed.pending_fire is not None and claimed.pending_fire.tick == due


async def test_a_paused_or_deleted_schedule_cannot_be_claimed(schedules: ScheduleStore) -> None:
    due = utcnow()
    paused = await schedules.insert(make_schedule(next_fire_at=due, paused=True))
    deleted = await schedules.insert(make_schedule(next_fire_at=due))
    await schedules.delete_visible(deleted.id, ALICE)
    for schedule in (paused, deleted):
        assert not await schedules.claim_tick(schedule.id, expected=due, next_fire_at=due, tick=due, now=due)


async def test_a_pending_tick_is_found_once_stale_and_cleared_when_recorded(schedules: ScheduleStore) -> None:
    now = utcnow()
    schedule = await schedules.insert(make_schedule(next_fire_at=now))
    await schedules.claim_tick(schedule.id, expected=now, next_fire_at=now + timedelta(hours=1), tick=now, now=now)
    assert await schedules.stale_pending(now, 10) == []
    assert [stale.id for stale in await schedules.stale_pending(now + timedelta(seconds=1), 10)] == [schedule.id]
    await schedules.record_fired(schedule.id, now - timedelta(hours=1), job_id="X" * 26, error=None)  # another tick
    assert (await schedules.get_visible(schedule.id, ALICE)).pending_fire is not None
    await schedules.record_fired(schedule.id, now, job_id="J" * 26, error=None)
    recorded = await schedules.get_visible(schedule.id, ALICE)
    assert (recorded.pending_fire, recorded.last_job_id, recorded.last_error) == (None, "J" * 26, None)
    assert await schedules.stale_pending(now + timedelta(seconds=1), 10) == []


async def test_a_broken_schedule_is_paused_with_its_reason(schedules: ScheduleStore) -> None:
    schedule = await schedules.insert(make_schedule())
    await schedules.pause_broken(schedule.id, "no next tick")
    broken = await schedules.get_visible(schedule.id, ALICE)
    assert broken.paused and broken.last_error == "no next tick"
