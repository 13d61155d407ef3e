"""The outbox's dispatcher clears every sent job's flag, even those sent while a clear is under way."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import UTC, datetime

import pytest
from mongomock_motor import AsyncMongoMockClient

from engineroom.core import dispatch
from engineroom.core.dispatch import Dispatcher
from engineroom.core.ids import new_id
from engineroom.models.job import JobDocument, JobState
from engineroom.store.jobs import JobStore


class _SentList:
    """Stands in for the Enqueuer: records what was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def enqueue(self, job: JobDocument) -> None:
        self.sent.append(job.id)


class _SlowClearStore(JobStore):
    async def confirm_dispatched(self, job_ids: Collection[str]) -> None:
        await asyncio.sleep(0.1)  # a slow MongoDB: more jobs are sent while this runs
        await super().confirm_dispatched(job_ids)


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


async def test_a_clear_leaves_jobs_a_worker_claimed_meanwhile_alone() -> None:
    jobs = JobStore(AsyncMongoMockClient(tz_aware=True)["t"])
    waiting, claimed = await jobs.insert(_job()), await jobs.insert(_job())
    await jobs.transition(claimed.id, expected=[JobState.QUEUED], to=JobState.RUNNING)
    await jobs.confirm_dispatched([waiting.id, claimed.id])
    found = {job.id: await jobs.get(job.id) for job in (waiting, claimed)}
    assert found[waiting.id] is not None and found[waiting.id].needs_dispatch is False
    # No write at all for the claimed job: in production its claim cleared the flag in the same write.
    assert found[claimed.id] is not None and found[claimed.id].needs_dispatch is True


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
    )
