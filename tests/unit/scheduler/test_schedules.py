"""ScheduleFirer over mongomock-motor with a submitter that records: claims, stale leaders, missed ticks, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient

from engineroom.core.errors import InvalidRequest
from engineroom.core.ids import new_id
from engineroom.models.job import JobDocument, JobState, JobSubmit
from engineroom.models.principal import Principal
from engineroom.models.schedule import MissedTicks, ScheduleDocument
from engineroom.scheduler.schedules import PENDING_FIRE_GRACE_S, ScheduleFirer, idempotency_key
from engineroom.services.submission import JobSubmitter
from engineroom.store.client import Database, ensure_indexes
from engineroom.store.schedules import ScheduleStore

ALICE = Principal(user_id="alice", tenant_id="acme")
HOURLY = "0 * * * *"
NOON = datetime(2024, 5, 6, 12, tzinfo=UTC)


class RecordingSubmitter(JobSubmitter):
    """Records each submit; refuses with ``refusal`` when set. One job per idempotency key, as the job store does."""

    def __init__(self) -> None:  # no store, broker or bus: nothing is really submitted
        self.submits: list[tuple[JobSubmit, Principal, str | None]] = []
        self.jobs: dict[str | None, JobDocument] = {}  # type: ignore[assignment]
        self.refusal: InvalidRequest | None = None

    async def submit(
        self, body: JobSubmit, who: Principal, idempotency_key: str | None = None
    ) -> tuple[JobDocument, bool]:
        if self.refusal is not None:
            raise self.refusal
        self.submits.append((body, who, idempotency_key))
        if idempotency_key in self.jobs:
            return self.jobs[idempotency_key], False
        job = JobDocument(
            id=new_id(),
            tenant_id=who.tenant_id,
            user_id=who.user_id,
            engine="general",
            task=body.task,
            state=JobState.QUEUED,
            created_at=NOON,
        )
        self.jobs[idempotency_key] = job
        return job, True


@pytest.fixture
async def schedules() -> ScheduleStore:
    db: Database = AsyncMongoMockClient(tz_aware=True)["test"]
    await ensure_indexes(db, retention_days=30)
    return ScheduleStore(db)


@pytest.fixture
def submitter() -> RecordingSubmitter:
    return RecordingSubmitter()


async def due_schedule(schedules: ScheduleStore, next_fire_at: datetime, **fields: Any) -> ScheduleDocument:
    defaults: dict[str, Any] = {
        "id": new_id(),
        "tenant_id": ALICE.tenant_id,
        "user_id": ALICE.user_id,
        "cron": HOURLY,
        "timezone": "UTC",
        "missed": MissedTicks.SKIP,
        "task": "general.demo",
        "payload": {"duration_s": 0},
        "created_at": NOON - timedelta(days=1),
        "next_fire_at": next_fire_at,
    }
    return await schedules.insert(ScheduleDocument(**{**defaults, **fields}))


async def test_a_due_tick_submits_its_job_as_the_owner_and_moves_on(
    schedules: ScheduleStore, submitter: RecordingSubmitter
) -> None:
    schedule = await due_schedule(schedules, NOON, tags=["t"], metadata={"team": "data"}, priority=8)
    await ScheduleFirer(schedules, submitter).fire_due(NOON + timedelta(seconds=1))
    [(body, who, key)] = submitter.submits
    assert who == ALICE and key == idempotency_key(schedule.id, NOON)
    assert (body.task, body.payload, body.priority, body.tags) == ("general.demo", {"duration_s": 0}, 8, ["t"])
    assert body.metadata == {"team": "data", "schedule_id": schedule.id, "schedule_tick": NOON.isoformat()}
    fired = await schedules.get_visible(schedule.id, ALICE)
    assert (fired.next_fire_at, fired.last_fired_at, fired.pending_fire) == (NOON + timedelta(hours=1), NOON, None)
    assert fired.last_job_id == submitter.jobs[key].id


async def test_a_stale_leader_cannot_fire_a_tick_claimed_since_even_at_a_later_time(
    schedules: ScheduleStore, submitter: RecordingSubmitter
) -> None:
    # Both read the schedule due; the stale one wakes two hours later, when a later tick would be its latest
    read = await due_schedule(schedules, NOON, missed=MissedTicks.RUN_ONCE)
    await ScheduleFirer(schedules, submitter).fire(read, NOON)
    await ScheduleFirer(schedules, submitter).fire(read, NOON + timedelta(hours=2))
    assert [key for _, _, key in submitter.submits] == [idempotency_key(read.id, NOON)]


async def test_skip_moves_past_a_long_missed_tick_and_run_once_fires_the_latest(
    schedules: ScheduleStore, submitter: RecordingSubmitter
) -> None:
    skip = await due_schedule(schedules, NOON - timedelta(hours=3))
    run_once = await due_schedule(schedules, NOON - timedelta(hours=3), missed=MissedTicks.RUN_ONCE)
    now = NOON + timedelta(minutes=5)
    await ScheduleFirer(schedules, submitter).fire_due(now)
    assert [key for _, _, key in submitter.submits] == [idempotency_key(run_once.id, NOON)]
    for schedule_id in (skip.id, run_once.id):
        assert (await schedules.get_visible(schedule_id, ALICE)).next_fire_at == NOON + timedelta(hours=1)
    assert (await schedules.get_visible(skip.id, ALICE)).last_fired_at is None


async def test_the_grace_lets_a_skip_schedule_fire_a_tick_late(
    schedules: ScheduleStore, submitter: RecordingSubmitter
) -> None:
    schedule = await due_schedule(schedules, NOON)
    await ScheduleFirer(schedules, submitter, grace_s=300).fire_due(NOON + timedelta(minutes=4))
    assert [key for _, _, key in submitter.submits] == [idempotency_key(schedule.id, NOON)]


async def test_a_paused_schedule_does_not_fire(schedules: ScheduleStore, submitter: RecordingSubmitter) -> None:
    await due_schedule(schedules, NOON, paused=True)
    await ScheduleFirer(schedules, submitter).fire_due(NOON + timedelta(hours=5))
    assert submitter.submits == []


async def test_a_refused_submit_is_recorded_on_the_schedule_and_the_tick_is_spent(
    schedules: ScheduleStore, submitter: RecordingSubmitter
) -> None:
    schedule = await due_schedule(schedules, NOON)
    submitter.refusal = InvalidRequest("unknown task 'general.demo'")
    await ScheduleFirer(schedules, submitter).fire_due(NOON)
    refused = await schedules.get_visible(schedule.id, ALICE)
    assert refused.last_error == "unknown task 'general.demo'" and refused.pending_fire is None
    assert refused.next_fire_at == NOON + timedelta(hours=1) and refused.last_job_id is None
    # The next tick that works clears the error
    submitter.refusal = None
    await ScheduleFirer(schedules, submitter).fire_due(NOON + timedelta(hours=1))
    assert (await schedules.get_visible(schedule.id, ALICE)).last_error is None


async def test_a_schedule_whose_times_cannot_be_computed_is_paused_with_the_reason(
    schedules: ScheduleStore, submitter: RecordingSubmitter
) -> None:
    schedule = await due_schedule(schedules, NOON, timezone="Atlantis/Capital")  # stored by an older tz database
    await ScheduleFirer(schedules, submitter).fire_due(NOON)
    broken = await schedules.get_visible(schedule.id, ALICE)
    assert broken.paused and "unknown timezone 'Atlantis/Capital'" in (broken.last_error or "")
    assert submitter.submits == []


async def test_a_tick_left_pending_is_submitted_again_with_the_same_key(
    schedules: ScheduleStore, submitter: RecordingSubmitter
) -> None:
    schedule = await due_schedule(schedules, NOON)
    next_tick = NOON + timedelta(hours=1)
    # A scheduler claimed the tick and died before its job was recorded
    await schedules.claim_tick(schedule.id, expected=NOON, next_fire_at=next_tick, tick=NOON, now=NOON)
    firer = ScheduleFirer(schedules, submitter)
    await firer.fire_due(NOON + timedelta(seconds=PENDING_FIRE_GRACE_S / 2))
    assert submitter.submits == []  # the claimer may still be at work
    await firer.fire_due(NOON + timedelta(seconds=PENDING_FIRE_GRACE_S + 1))
    assert [key for _, _, key in submitter.submits] == [idempotency_key(schedule.id, NOON)]
    assert (await schedules.get_visible(schedule.id, ALICE)).pending_fire is None
