"""Which queued jobs MongoDB expects in RabbitMQ, in the order they should start, and which are overdue there
(SecantusDB: the queries must plan on the ``parked`` index, see test_indexes.py)."""

from __future__ import annotations

from datetime import timedelta

from engineroom.core.clock import utcnow
from engineroom.core.ids import new_id
from engineroom.models.job import JobState
from engineroom.store.client import Database
from engineroom.store.jobs import JobStore
from tests.unit.store.test_jobs import make_job


async def test_jobs_expected_in_rabbitmq_come_a_priority_at_a_time_oldest_first_and_never_parked(db: Database) -> None:
    jobs = JobStore(db)
    # Given queued jobs of two priorities, a parked one, a running one and another engine's
    older, newer = make_job(priority=5), make_job(priority=5)
    urgent = make_job(priority=8)
    for job in (newer, urgent, older):  # stored out of order
        await jobs.insert(job)
    await jobs.insert(make_job(priority=8, parked=True))
    await jobs.insert(make_job(priority=8, state=JobState.RUNNING))
    await jobs.insert(make_job(priority=8, engine="image_generation"))
    # When they are read in batches of one
    assert [job.id for job in await jobs.expected_in_broker("general", 8, None, 1)] == [urgent.id]
    assert await jobs.expected_in_broker("general", 8, urgent.id, 1) == []
    assert [job.id for job in await jobs.expected_in_broker("general", 5, None, 1)] == [older.id]
    assert [job.id for job in await jobs.expected_in_broker("general", 5, older.id, 1)] == [newer.id]
    # Then the count matches what a walk finds
    assert await jobs.count_expected_in_broker("general") == 3


async def test_a_job_is_overdue_in_rabbitmq_once_queued_before_the_cutoff_not_made_before_it(db: Database) -> None:
    jobs = JobStore(db)
    now = utcnow()
    long_ago_ms = int((now - timedelta(hours=1)).timestamp() * 1000)
    # Given a job made an hour ago but queued again just now (a retry), and a parked job queued long ago
    await jobs.insert(make_job(id=new_id(long_ago_ms), queued_at=now))
    await jobs.insert(make_job(id=new_id(long_ago_ms), queued_at=now - timedelta(hours=1), parked=True))
    cutoff = now - timedelta(seconds=10)
    # Then neither is overdue in RabbitMQ
    assert not await jobs.has_overdue_in_broker("general", cutoff, limit=20)
    # When a job queued before the cutoff waits, not parked, at a lower priority
    await jobs.insert(make_job(id=new_id(long_ago_ms), queued_at=now - timedelta(minutes=5), priority=0))
    # Then it is
    assert await jobs.has_overdue_in_broker("general", cutoff, limit=20)
    assert not await jobs.has_overdue_in_broker("image_generation", cutoff, limit=20)
