"""A job is announced ``job.queued`` before its message leaves: a worker that takes the message at once announces
``job.started``, and that must never reach a socket, or the replay log, ahead of the job's own ``job.queued``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import pytest

from engineroom.core.config import Settings
from engineroom.messaging.broker import Enqueuer
from engineroom.messaging.bus import LocalEventBus
from engineroom.models.event import Event
from engineroom.models.job import JobDocument, JobState, JobSubmit
from engineroom.models.principal import Principal
from engineroom.scheduler.loop import Scheduler, SchedulerStores
from engineroom.services.control import JobControl
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.services.registry import load_task_modules
from engineroom.services.submission import JobSubmitter
from engineroom.store.client import Database
from engineroom.store.events import EventStore

ALICE = Principal(user_id="alice", tenant_id="acme")


@dataclass
class _Heard:
    """What the bus had carried for each job when that job's message was sent."""

    events: list[Event] = field(default_factory=list)
    at_send: dict[str, list[str]] = field(default_factory=dict)

    def note_sent(self, job: JobDocument) -> None:
        self.at_send[job.id] = [str(event.type) for event in self.events if event.job_id == job.id]

    async def enqueue(self, job: JobDocument) -> None:
        self.note_sent(job)

    async def enqueue_many(self, jobs: list[JobDocument]) -> list[str]:
        for job in jobs:
            self.note_sent(job)
        return [job.id for job in jobs]


@dataclass
class _Gateway:
    heard: _Heard
    submitter: JobSubmitter
    control: JobControl
    scheduler: Scheduler


@pytest.fixture
async def gateway(db: Database, settings: Settings) -> AsyncIterator[_Gateway]:
    """A gateway's submitter and controls, and a scheduler, sending to ``_Heard`` instead of RabbitMQ."""
    load_task_modules()
    heard, bus, stores = _Heard(), LocalEventBus(), SchedulerStores.of(db, settings)
    bus.subscribe(heard.events.append)
    publisher = AsyncEventPublisher(bus, EventStore(db, ttl_s=3600))
    dispatcher = Dispatcher(stores.jobs, cast(Enqueuer, heard))  # the enqueuer, as a worker would see it
    yield _Gateway(
        heard,
        JobSubmitter(stores.jobs, dispatcher, publisher),
        JobControl(stores.jobs, dispatcher, publisher),
        Scheduler(settings, stores, dispatcher, publisher),
    )
    await dispatcher.close()
    publisher.close()


def _demo() -> JobSubmit:
    return JobSubmit(task="general.demo", payload={"duration_s": 0})


async def test_a_submitted_job_is_announced_before_its_message_is_sent(gateway: _Gateway) -> None:
    job, _ = await gateway.submitter.submit(_demo(), ALICE)
    assert gateway.heard.at_send[job.id] == ["job.queued"]


async def test_every_job_of_a_batch_is_announced_before_any_message_is_sent(gateway: _Gateway) -> None:
    jobs = await gateway.submitter.submit_many([_demo() for _ in range(3)], ALICE)
    assert [gateway.heard.at_send[job.id] for job in jobs] == [["job.queued"]] * 3


async def test_a_retried_job_is_announced_queued_before_its_message_is_sent(gateway: _Gateway) -> None:
    job, _ = await gateway.submitter.submit(_demo(), ALICE)
    await gateway.control.cancel(job.id, ALICE)
    retried = await gateway.control.retry(job.id, ALICE)
    assert retried.state == JobState.QUEUED
    assert gateway.heard.at_send[job.id] == ["job.queued", "job.cancelled", "job.queued"]


async def test_a_job_the_scheduler_queues_when_due_is_announced_before_its_message_is_sent(gateway: _Gateway) -> None:
    job, _ = await gateway.submitter.submit(JobSubmit(task="general.demo", payload={}, delay_s=0.01), ALICE)
    assert job.state == JobState.SCHEDULED
    await asyncio.sleep(0.05)
    await gateway.scheduler.release_due_scheduled()
    assert gateway.heard.at_send[job.id] == ["job.scheduled", "job.queued"]
