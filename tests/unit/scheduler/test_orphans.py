"""A lapsed lease is judged against its worker's liveness: a slow worker keeps its job, a gone one loses it, and a
worker that lost its job can neither free the slot nor record an outcome over the job's next attempt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.errors import InvalidTransition
from engineroom.core.ids import new_id
from engineroom.messaging.bus import LocalEventBus
from engineroom.models.event import EventType, job_event
from engineroom.models.job import JobDocument, JobState, RunningAttempt, Usage
from engineroom.models.queue import QueueLimits
from engineroom.models.worker import ProcessKind, WorkerPublic
from engineroom.scheduler.loop import Scheduler, SchedulerStores
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.client import Database
from engineroom.store.events import EventStore


@dataclass
class _Sent:
    job_ids: list[str] = field(default_factory=list)

    async def enqueue(self, job: JobDocument) -> None:
        self.job_ids.append(job.id)

    async def enqueue_many(self, jobs: list[JobDocument]) -> list[str]:
        self.job_ids.extend(job.id for job in jobs)
        return [job.id for job in jobs]


@dataclass
class _Cluster:
    stores: SchedulerStores
    scheduler: Scheduler
    sent: _Sent


@pytest.fixture
async def cluster(db: Database, settings: Settings) -> AsyncIterator[_Cluster]:
    stores, sent = SchedulerStores.of(db, settings), _Sent()
    publisher = AsyncEventPublisher(LocalEventBus(), EventStore(db, ttl_s=60))
    scheduler = Scheduler(settings, stores, Dispatcher(stores.jobs, sent), publisher)  # type: ignore[arg-type]
    await stores.queues.ensure_defaults()
    yield _Cluster(stores, scheduler, sent)
    publisher.close()


async def _running_job(cluster: _Cluster, worker_id: str, *, lease_lapsed_s: float = 5.0) -> JobDocument:
    """A running job of ``worker_id`` whose lease lapsed ``lease_lapsed_s`` ago, holding a slot of ``general``."""
    now = utcnow()
    job = JobDocument(
        id=new_id(),
        tenant_id="acme",
        user_id="alice",
        engine="general",
        task="general.demo",
        state=JobState.RUNNING,
        attempts=1,
        max_retries=3,
        created_at=now - timedelta(seconds=60),
        started_at=now - timedelta(seconds=30),
        worker_id=worker_id,
        lease_expires_at=now - timedelta(seconds=lease_lapsed_s),
    )
    await cluster.stores.jobs.insert(job)
    until = now + timedelta(seconds=30)
    acquired = await cluster.stores.queues.try_acquire(
        "general", job_id=job.id, tenant_id="acme", worker_id=worker_id, until=until, now=now
    )
    assert acquired
    return job


async def _beat(cluster: _Cluster, worker_id: str, job_ids: list[str]) -> None:
    now = utcnow()
    await cluster.stores.workers.beat(
        WorkerPublic(
            id=worker_id,
            kind=ProcessKind.WORKER,
            host="h",
            pid=1,
            current_job_ids=job_ids,
            started_at=now - timedelta(seconds=60),
            last_heartbeat=now,
        )
    )


async def _holders(cluster: _Cluster) -> list[tuple[str, str]]:
    queue = await cluster.stores.queues.get("general")
    return [(holder.job_id, holder.worker_id) for holder in queue.holders]


async def test_a_slow_worker_that_still_beats_keeps_its_job_when_the_lease_lapses(cluster: _Cluster) -> None:
    job = await _running_job(cluster, "slow-worker")
    await _beat(cluster, "slow-worker", [job.id])
    await cluster.scheduler.recover_orphans()
    stored = await cluster.stores.jobs.get(job.id)
    assert stored is not None and (stored.state, stored.worker_id) == (JobState.RUNNING, "slow-worker")
    assert cluster.sent.job_ids == []
    assert await _holders(cluster) == [(job.id, "slow-worker")]


@pytest.mark.parametrize("worker_is_live", [False, True], ids=["worker gone", "worker live without the job"])
async def test_a_job_whose_worker_is_gone_or_forgot_it_is_queued_again_and_its_slot_freed(
    cluster: _Cluster, worker_is_live: bool
) -> None:
    job = await _running_job(cluster, "lost-worker")
    if worker_is_live:
        await _beat(cluster, "lost-worker", [])  # reported after the job started, without it
    await cluster.scheduler.recover_orphans()
    stored = await cluster.stores.jobs.get(job.id)
    assert stored is not None and stored.state == JobState.QUEUED and stored.worker_id is None
    assert cluster.sent.job_ids == [job.id]
    assert await _holders(cluster) == []


async def test_a_worker_that_lost_its_job_frees_and_renews_only_its_own_slot(cluster: _Cluster) -> None:
    job = await _running_job(cluster, "new-holder")
    queues = cluster.stores.queues
    await queues.renew([job.id], "old-holder", utcnow() + timedelta(days=1))
    await queues.release("general", job.id, "old-holder")
    queue = await queues.get("general")
    assert [(holder.job_id, holder.worker_id) for holder in queue.holders] == [(job.id, "new-holder")]
    assert queue.holders[0].expires_at < utcnow() + timedelta(hours=1)


async def test_a_worker_that_lost_its_job_cannot_record_an_outcome_over_the_next_attempt(cluster: _Cluster) -> None:
    job = await _running_job(cluster, "new-holder")
    jobs = cluster.stores.jobs
    with pytest.raises(InvalidTransition):
        await jobs.complete(
            job.id,
            attempt=RunningAttempt(worker_id="old-holder", attempts=job.attempts),
            result=None,
            usage=Usage(),
            finished_at=utcnow(),
            outcome=job_event(job, EventType.JOB_COMPLETED),
        )
    assert not await jobs.set_progress(job.id, job.progress, "old-holder")
    stored = await jobs.get(job.id)
    assert stored is not None and stored.state == JobState.RUNNING


async def _hold_slot(cluster: _Cluster, job_id: str, worker_id: str, *, renewed_s_ago: float) -> None:
    """A slot of ``general`` that ``worker_id`` last renewed ``renewed_s_ago`` seconds ago."""
    settings = cluster.scheduler.settings
    renewed = utcnow() - timedelta(seconds=renewed_s_ago)
    until = renewed + timedelta(seconds=settings.slot_lease_s)
    acquired = await cluster.stores.queues.try_acquire(
        "general", job_id=job_id, tenant_id="acme", worker_id=worker_id, until=until, now=utcnow()
    )
    assert acquired


async def test_the_slots_of_a_gone_worker_are_freed_and_a_late_live_one_keeps_its_own(cluster: _Cluster) -> None:
    lease_s = cluster.scheduler.settings.job_lease_s
    await cluster.stores.queues.set_limits("general", QueueLimits(max_concurrency=3))
    await _hold_slot(cluster, "late", "slow-worker", renewed_s_ago=2 * lease_s)
    await _beat(cluster, "slow-worker", ["late"])
    await _hold_slot(cluster, "orphan", "gone-worker", renewed_s_ago=2 * lease_s)
    await _hold_slot(cluster, "fresh", "just-started-worker", renewed_s_ago=0)  # no heartbeat document yet
    await cluster.scheduler.reclaim_slots()
    assert sorted(await _holders(cluster)) == [("fresh", "just-started-worker"), ("late", "slow-worker")]
