"""The outbox's dispatcher clears every sent job's flag, even those sent while a clear is under way."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from mongomock_motor import AsyncMongoMockClient

from engineroom.core.errors import BrokerUnavailable
from engineroom.core.ids import new_id
from engineroom.models.job import JobDocument, JobState
from engineroom.services import dispatch
from engineroom.services.dispatch import Dispatcher
from engineroom.store.jobs import JobStore


class _SentList:
    """Stands in for the Enqueuer: records what was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def enqueue(self, job: JobDocument) -> None:
        self.sent.append(job.id)


class _ManySent(_SentList):
    """Also ``enqueue_many`` as the Enqueuer: the ids sent, in order, up to the first refusal."""

    down = False

    async def enqueue_many(self, jobs: list[JobDocument]) -> list[str]:
        if self.down:
            return []
        self.sent.extend(job.id for job in jobs)
        return [job.id for job in jobs]


class _RabbitMQDown(_SentList):
    """Sends until ``down`` is set, then refuses as the Enqueuer does when RabbitMQ is unreachable."""

    down = False

    async def enqueue(self, job: JobDocument) -> None:
        if self.down:
            raise BrokerUnavailable()
        await super().enqueue(job)


class _SlowClearStore(JobStore):
    async def confirm_dispatched(self, sent: Mapping[str, str | None]) -> None:
        await asyncio.sleep(0.1)  # a slow MongoDB: more jobs are sent while this runs
        await super().confirm_dispatched(sent)


async def test_jobs_sent_during_a_clear_are_cleared_in_a_later_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "CONFIRM_INTERVAL_S", 0.05)
    jobs = _SlowClearStore(AsyncMongoMockClient(tz_aware=True)["t"])
    enqueuer = _SentList()
    dispatcher = Dispatcher(jobs, enqueuer)  # type: ignore[arg-type]
    first, last = [await jobs.insert(_job()) for _ in range(2)]
    assert await dispatcher.dispatch(first)
    await asyncio.sleep(0.08)  # the first job's clear is now waiting on MongoDB
    assert await dispatcher.dispatch(last)  # ... and nothing is sent after this one
    await asyncio.sleep(0.5)
    assert enqueuer.sent == [first.id, last.id]
    for job in (first, last):
        found = await jobs.get(job.id)
        assert found is not None and found.needs_dispatch is False


@pytest.mark.parametrize("clear_under_way", [False, True])
async def test_a_job_flagged_again_whose_send_fails_keeps_its_flag(
    monkeypatch: pytest.MonkeyPatch, clear_under_way: bool
) -> None:
    # A parked job released again while the clear of its earlier send is pending (or being written), and its new
    # send refused: that clear must not wipe the new flag, or the job waits queued with no message, for good.
    # (The earlier send may as well have been another process's: the gateway's, of the submit.)
    monkeypatch.setattr(dispatch, "CONFIRM_INTERVAL_S", 0.05)
    jobs = _SlowClearStore(AsyncMongoMockClient(tz_aware=True)["t"])
    enqueuer = _RabbitMQDown()
    dispatcher = Dispatcher(jobs, enqueuer)  # type: ignore[arg-type]
    job = await jobs.insert(_job())
    assert await dispatcher.dispatch(job)
    if clear_under_way:
        await asyncio.sleep(0.08)  # the clear of the first send is now waiting on MongoDB
    assert await jobs.park(job.id)  # a worker took the message and found no slot
    released = await jobs.unpark(job)  # the scheduler releases it
    assert released is not None and released.dispatch_token != job.dispatch_token
    enqueuer.down = True
    assert not await dispatcher.dispatch(released)
    await asyncio.sleep(0.5)
    found = await jobs.get(job.id)
    assert found is not None and found.needs_dispatch is True


async def test_a_clear_leaves_jobs_a_worker_claimed_meanwhile_alone() -> None:
    jobs = JobStore(AsyncMongoMockClient(tz_aware=True)["t"])
    waiting, claimed = await jobs.insert(_job()), await jobs.insert(_job())
    # claimed behind the store's back, its flag left standing: a clear that wrote to it would show
    await jobs.collection.update_one({"_id": claimed.id}, {"$set": {"state": str(JobState.RUNNING)}})
    await jobs.confirm_dispatched({waiting.id: waiting.dispatch_token, claimed.id: claimed.dispatch_token})
    found = {job.id: await jobs.get(job.id) for job in (waiting, claimed)}
    waiting_now, claimed_now = found[waiting.id], found[claimed.id]
    assert waiting_now is not None and waiting_now.needs_dispatch is False
    # No write at all for the claimed job: in production its claim cleared the flag in the same write.
    assert claimed_now is not None and claimed_now.needs_dispatch is True


def _job() -> JobDocument:
    return JobDocument(
        id=new_id(),
        tenant_id="t",
        user_id="u",
        engine="general",
        task="general.demo",
        state=JobState.QUEUED,
        created_at=datetime.now(UTC),
        needs_dispatch=True,
        dispatch_token=new_id(),
    )


async def test_a_batch_sent_whole_leaves_neither_its_outbox_record_nor_a_flag_on_its_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "CONFIRM_INTERVAL_S", 0.05)
    jobs = JobStore(AsyncMongoMockClient(tz_aware=True)["t"])
    enqueuer = _ManySent()
    dispatcher = Dispatcher(jobs, enqueuer)  # type: ignore[arg-type]
    held, batch = await dispatcher.hold([_job() for _ in range(3)])
    assert batch is not None and await dispatcher.outbox.collection.count_documents({}) == 1
    await jobs.insert_many(held)
    assert await dispatcher.dispatch_many(held, batch=batch) == 3
    await asyncio.sleep(0.3)
    assert enqueuer.sent == [job.id for job in held]
    assert await dispatcher.outbox.collection.count_documents({}) == 0
    assert [job.needs_dispatch for job in held] == [False] * 3  # stored without a flag: no clear to write


async def test_a_batch_whose_send_failed_is_sent_by_the_sweep_except_the_jobs_that_moved_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "CONFIRM_INTERVAL_S", 0.05)
    jobs = JobStore(AsyncMongoMockClient(tz_aware=True)["t"])
    enqueuer = _ManySent()
    dispatcher = Dispatcher(jobs, enqueuer)  # type: ignore[arg-type]
    held, batch = await dispatcher.hold([_job() for _ in range(4)])
    assert batch is not None
    await jobs.insert_many(held)
    enqueuer.down = True
    assert await dispatcher.dispatch_many(held, batch=batch) == 0
    claimed, parked = held[1], held[2]
    await jobs.collection.update_one({"_id": claimed.id}, {"$set": {"state": str(JobState.RUNNING)}})  # a worker's
    assert await jobs.park(parked.id)
    assert await jobs.unpark(parked) is not None  # flagged on its own, under a new token: the per-job path's
    # While RabbitMQ is down the record stays; once it is back, the sweep sends the two jobs still waiting for it.
    # The sweep runs a second later: a date is stored and compared to the millisecond, so "opened before now"
    # misses a record opened in the same millisecond, which this in-memory test can be.
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert not await dispatcher.send_overdue_batches(later, limit=10)
    enqueuer.down = False
    assert await dispatcher.send_overdue_batches(later, limit=10)
    assert enqueuer.sent == [held[0].id, held[3].id]
    await asyncio.sleep(0.3)
    assert await dispatcher.outbox.collection.count_documents({}) == 0
    assert await dispatcher.send_overdue_batches(later, limit=10)
    assert enqueuer.sent == [held[0].id, held[3].id]


async def test_a_batch_record_younger_than_the_grace_is_left_to_its_sender() -> None:
    jobs = JobStore(AsyncMongoMockClient(tz_aware=True)["t"])
    enqueuer = _ManySent()
    dispatcher = Dispatcher(jobs, enqueuer)  # type: ignore[arg-type]
    held, _ = await dispatcher.hold([_job()])
    await jobs.insert_many(held)
    assert await dispatcher.send_overdue_batches(datetime(2020, 1, 1, tzinfo=UTC), limit=10)
    assert enqueuer.sent == []
