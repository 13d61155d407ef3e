"""A scheduler tick names each of its phases that ran slow (a stalled scheduler otherwise leaves no trace), and runs
the sweeps for rare events at their own pace."""

from __future__ import annotations

import logging

import pytest

from engineroom.core.config import ENGINES, Settings
from engineroom.messaging.bus import LocalEventBus
from engineroom.models.job import JobDocument
from engineroom.models.queue import QueueLimits
from engineroom.scheduler import loop
from engineroom.scheduler.loop import Scheduler, SchedulerStores
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.client import Database
from engineroom.store.events import EventStore
from tests.unit.store.test_jobs import make_job


async def test_a_slow_tick_phase_is_logged_by_name(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stores = SchedulerStores.of(db, settings)
    publisher = AsyncEventPublisher(LocalEventBus(), EventStore(db, ttl_s=60))
    scheduler = Scheduler(settings, stores, Dispatcher(stores.jobs, enqueuer=None), publisher)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="engineroom.scheduler.loop")
    monkeypatch.setattr(loop, "SLOW_PHASE_S", -1.0)  # every phase counts as slow
    await scheduler.tick()
    slow = [record.getMessage() for record in caplog.records if "took" in record.getMessage()]
    assert len(slow) == 13 and slow[0].startswith("scheduler tick: release_due_scheduled took")
    assert slow[-1].startswith("scheduler tick: sweep_artifacts took")
    # At once again: the sweeps for rare events wait for their own pace
    caplog.clear()
    await scheduler.tick()
    again = [record.getMessage().split()[2] for record in caplog.records if "took" in record.getMessage()]
    assert again == [
        "release_due_scheduled",
        "release_ready_dependents",
        "finish_workflows",
        "release_due_retries",
        "start_parked",
        "resend_lost_messages",
    ]
    publisher.close()


class _Sent:
    def __init__(self) -> None:
        self.job_ids: list[str] = []

    async def enqueue(self, job: JobDocument) -> None:
        self.job_ids.append(job.id)


async def test_parked_jobs_are_looked_for_every_tick_only_where_a_tenant_cap_can_park_them(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores, sent = SchedulerStores.of(db, settings), _Sent()
    publisher = AsyncEventPublisher(LocalEventBus(), EventStore(db, ttl_s=60))
    scheduler = Scheduler(settings, stores, Dispatcher(stores.jobs, sent), publisher)  # type: ignore[arg-type]
    await stores.queues.ensure_defaults()
    await stores.queues.set_limits("image_generation", QueueLimits(max_concurrency_per_tenant=1))
    # A job parked under general's cap, which was lifted since
    left_over = make_job(engine="general")
    await stores.jobs.insert(left_over)
    assert await stores.jobs.park(left_over.id)
    looked_at: list[str] = []
    parked = stores.jobs.parked

    async def spied(engine: str, limit: int) -> list[JobDocument]:
        looked_at.append(engine)
        return await parked(engine, limit)

    monkeypatch.setattr(stores.jobs, "parked", spied)
    # The sweep of every tick looks only at the engine with a cap
    for _ in range(3):
        await scheduler.start_parked()
    assert looked_at == ["image_generation"] * 3 and sent.job_ids == []
    # The paced one (every UNCAPPED_PARKED_SWEEP_S, test_a_slow_tick_phase_is_logged_by_name) at every other engine,
    # and it sends the left-over job
    looked_at.clear()
    await scheduler.start_parked(capped=False)
    assert set(looked_at) == set(ENGINES) - {"image_generation"} and sent.job_ids == [left_over.id]
    publisher.close()
