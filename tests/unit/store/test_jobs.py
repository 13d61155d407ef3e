"""JobStore on mongomock-motor: single-document paths, conditional transitions, visibility, paging."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient

from engineroom.core.clock import utcnow
from engineroom.core.errors import InvalidTransition, NotFound
from engineroom.core.ids import new_id
from engineroom.models.event import Event, EventType, job_event
from engineroom.models.job import (
    JobDocument,
    JobError,
    JobFilter,
    JobStart,
    JobState,
    Progress,
    RunningAttempt,
    Usage,
)
from engineroom.models.principal import ADMIN_ROLE, Principal
from engineroom.store.client import Database, ensure_indexes
from engineroom.store.jobs import JobStore

ALICE = Principal(user_id="alice", tenant_id="acme")
BOB = Principal(user_id="bob", tenant_id="acme")
ACME_ADMIN = Principal(user_id="root", tenant_id="acme", roles=(ADMIN_ROLE,))
MALLORY = Principal(user_id="alice", tenant_id="evil")


def make_job(owner: Principal = ALICE, **fields: Any) -> JobDocument:
    now = utcnow()
    defaults: dict[str, Any] = {
        "id": new_id(),
        "tenant_id": owner.tenant_id,
        "user_id": owner.user_id,
        "engine": "general",
        "task": "general.demo",
        "state": JobState.QUEUED,
        "created_at": now,
        "queued_at": now,
    }
    return JobDocument(**{**defaults, **fields})


@pytest.fixture
async def jobs() -> JobStore:
    db: Database = AsyncMongoMockClient(tz_aware=True)["test"]
    await ensure_indexes(db, retention_days=30)
    return JobStore(db)


async def test_an_inserted_job_reads_back_equal(jobs: JobStore) -> None:
    job = make_job(payload={"text": "hi"}, tags=["a"])
    await jobs.insert(job)
    assert await jobs.get(job.id) == job


def a_start(worker_id: str = "w1") -> JobStart:
    now = utcnow()
    return JobStart(worker_id=worker_id, started_at=now, lease_until=now + timedelta(seconds=30), detail="attempt 1")


def an_outcome(job: JobDocument) -> Event:
    return job_event(job, EventType.JOB_COMPLETED)


async def test_a_start_moves_the_job_to_running_and_records_history(jobs: JobStore) -> None:
    job = await jobs.insert(make_job(needs_dispatch=True, parked=True))
    start = a_start()
    await jobs.mark_running(job.id, start)
    stored = await jobs.get(job.id)
    assert stored is not None
    assert stored.state == JobState.RUNNING and stored.attempts == 1
    assert stored.worker_id == "w1" and stored.lease_expires_at == start.lease_until
    assert not stored.needs_dispatch and not stored.parked
    assert [entry.state for entry in stored.history] == [JobState.RUNNING]
    assert start.applied_to(job).model_dump(exclude={"history"}) == stored.model_dump(exclude={"history"})


@pytest.mark.parametrize("current", [JobState.RUNNING, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED])
async def test_a_start_is_refused_for_a_job_in_another_state(jobs: JobStore, current: JobState) -> None:
    job = await jobs.insert(make_job(state=current))
    with pytest.raises(InvalidTransition):
        await jobs.mark_running(job.id, a_start())
    assert await jobs.get(job.id) == job


async def test_a_cancelled_job_cannot_be_completed(jobs: JobStore) -> None:
    job = await jobs.insert(make_job(state=JobState.CANCELLED, worker_id="w1", attempts=1))
    with pytest.raises(InvalidTransition):
        await jobs.complete(
            job.id,
            attempt=RunningAttempt(worker_id="w1", attempts=1),
            result=1,
            usage=Usage(),
            finished_at=utcnow(),
            outcome=an_outcome(job),
        )
    stored = await jobs.get(job.id)
    assert stored is not None and stored.result is None


@pytest.mark.parametrize("attempt", [RunningAttempt(worker_id="w2", attempts=2), RunningAttempt("w1", attempts=1)])
async def test_an_outcome_lands_only_on_the_attempt_it_belongs_to(jobs: JobStore, attempt: RunningAttempt) -> None:
    job = await jobs.insert(make_job(state=JobState.RUNNING, worker_id="w1", attempts=2))
    error = JobError(type="Boom", message="late")
    with pytest.raises(InvalidTransition):
        await jobs.fail(job.id, attempt=attempt, error=error, finished_at=utcnow(), outcome=an_outcome(job))
    assert await jobs.get(job.id) == job


async def test_an_outcome_with_an_unwritten_start_records_both(jobs: JobStore) -> None:
    job = await jobs.insert(make_job())
    start = a_start()
    outcome = an_outcome(job)
    usage = Usage(tokens_in=3)
    finished_at = utcnow()
    await jobs.complete(job.id, attempt=start, result={"n": 1}, usage=usage, finished_at=finished_at, outcome=outcome)
    stored = await jobs.get(job.id)
    assert stored is not None and stored.state == JobState.COMPLETED and stored.attempts == 1
    assert [entry.state for entry in stored.history] == [JobState.RUNNING, JobState.COMPLETED]
    assert stored.result == {"n": 1} and stored.usage == usage and stored.progress.percent == 100
    assert stored.worker_id == "w1" and stored.lease_expires_at is None and stored.started_at is not None
    assert stored.outcome_event == {"id": outcome.id, "ts": outcome.ts}


async def test_a_running_job_is_requeued_only_while_its_lease_is_the_lapsed_one(jobs: JobStore) -> None:
    lapsed = utcnow() - timedelta(seconds=1)
    job = await jobs.insert(make_job(state=JobState.RUNNING, worker_id="w1", lease_expires_at=lapsed))
    await jobs.renew_leases([job.id], "w1", utcnow() + timedelta(seconds=30))  # its worker came back
    with pytest.raises(InvalidTransition):
        await jobs.requeue(job, source=JobState.RUNNING, detail="lost")
    renewed = await jobs.get(job.id)
    assert renewed is not None
    queued = await jobs.requeue(renewed, source=JobState.RUNNING, detail="lost")
    stored = await jobs.get(job.id)
    assert stored is not None and stored.state == JobState.QUEUED and stored.needs_dispatch
    assert stored.worker_id is None and stored.lease_expires_at is None
    assert queued.dispatch_token == stored.dispatch_token and queued.state == JobState.QUEUED


async def test_a_start_of_a_missing_job_is_refused(jobs: JobStore) -> None:
    with pytest.raises(InvalidTransition):
        await jobs.mark_running(new_id(), a_start())


async def test_progress_is_recorded_only_while_running(jobs: JobStore) -> None:
    queued = await jobs.insert(make_job())
    running = await jobs.insert(make_job(state=JobState.RUNNING, worker_id="w1"))
    progress = Progress(percent=40, message="drafting", details={"step": 2})
    assert await jobs.set_progress(queued.id, progress, "w1") is False
    assert await jobs.set_progress(running.id, progress, "w2") is False  # another worker's attempt
    assert await jobs.set_progress(running.id, progress, "w1") is True
    stored = await jobs.get(running.id)
    assert stored is not None and stored.progress == progress


async def test_other_users_and_tenants_get_not_found(jobs: JobStore) -> None:
    job = await jobs.insert(make_job(owner=ALICE))
    assert (await jobs.get_visible(job.id, ALICE)).id == job.id
    assert (await jobs.get_visible(job.id, ACME_ADMIN)).id == job.id
    for stranger in (BOB, MALLORY):
        with pytest.raises(NotFound):
            await jobs.get_visible(job.id, stranger)


async def test_listing_shows_own_jobs_newest_first_and_admins_the_tenants(jobs: JobStore) -> None:
    base = utcnow()
    mine = [await jobs.insert(make_job(ALICE, id=new_id(int(base.timestamp() * 1000) + i))) for i in range(3)]
    await jobs.insert(make_job(BOB))
    await jobs.insert(make_job(MALLORY))
    page = await jobs.list_visible(ALICE, JobFilter())
    assert [job.id for job in page.items] == [job.id for job in reversed(mine)]
    assert len((await jobs.list_visible(ACME_ADMIN, JobFilter())).items) == 4


async def test_listing_pages_with_a_cursor_without_gaps_or_repeats(jobs: JobStore) -> None:
    created = {(await jobs.insert(make_job())).id for _ in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        page = await jobs.list_visible(ALICE, JobFilter(), limit=3, cursor=cursor)
        seen += [job.id for job in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == created
    assert seen == sorted(seen, reverse=True)


async def test_listing_filters_by_state_engine_task_tag_and_time(jobs: JobStore) -> None:
    now = utcnow()
    target = await jobs.insert(
        make_job(state=JobState.COMPLETED, engine="image_generation", task="image_generation.demo", tags=["x"])
    )
    await jobs.insert(make_job(state=JobState.COMPLETED, tags=["y"]))
    await jobs.insert(make_job(engine="image_generation", task="image_generation.demo", tags=["x"]))
    filters = JobFilter(
        state=JobState.COMPLETED,
        engine="image_generation",
        task="image_generation.demo",
        tag="x",
        created_after=now - timedelta(seconds=5),
        created_before=now + timedelta(seconds=5),
    )
    page = await jobs.list_visible(ALICE, filters)
    assert [job.id for job in page.items] == [target.id]


async def test_a_repeated_idempotency_key_returns_the_first_job(jobs: JobStore) -> None:
    first = await jobs.insert(make_job(idempotency_key="order-7"))
    again = await jobs.insert(make_job(idempotency_key="order-7"))
    assert again.id == first.id
    other_user = await jobs.insert(make_job(BOB, idempotency_key="order-7"))
    assert other_user.id != first.id


async def test_a_queued_jobs_position_counts_the_engines_jobs_that_start_before_it_parked_or_not(
    jobs: JobStore,
) -> None:
    ahead = [
        make_job(priority=8),  # higher priority
        make_job(priority=8, parked=True),
        make_job(priority=5),  # as high and older
        make_job(priority=5, parked=True),
    ]
    for job in ahead:
        await jobs.insert(job)
    job = await jobs.insert(make_job(priority=5))
    behind = [
        make_job(priority=5),  # younger
        make_job(priority=2, parked=True),
        make_job(priority=9, engine="video_pipeline"),  # another engine
        make_job(priority=9, state=JobState.RUNNING),  # not queued
    ]
    for other in behind:
        await jobs.insert(other)
    assert await jobs.position(job) == len(ahead)


async def test_an_outbox_clear_of_many_jobs_clears_every_flag_it_answers_and_no_other(jobs: JobStore) -> None:
    sent = [await jobs.insert(make_job(needs_dispatch=True, dispatch_token=new_id())) for _ in range(130)]
    reflagged, claimed = sent[70], sent[120]
    await jobs.collection.update_one({"_id": reflagged.id}, {"$set": {"dispatch_token": new_id()}})
    await jobs.collection.update_one({"_id": claimed.id}, {"$set": {"state": str(JobState.RUNNING)}})
    await jobs.confirm_dispatched({job.id: job.dispatch_token for job in sent})
    flagged = {job.id for job in sent if (stored := await jobs.get(job.id)) is not None and stored.needs_dispatch}
    assert flagged == {reflagged.id, claimed.id}


async def test_the_outcomes_of_more_jobs_than_one_chunk_holds_are_all_read(jobs: JobStore) -> None:
    stored = [await jobs.insert(make_job()) for _ in range(120)]
    found = await jobs.outcomes([job.id for job in stored] + [new_id()])
    assert sorted(job.id for job in found) == sorted(job.id for job in stored)
