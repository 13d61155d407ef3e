"""JobRunner against a real SecantusDB: it runs only queued jobs and records every outcome."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from engineroom.actors.engines import declare_engine_actors
from engineroom.actors.registry import load_task_modules
from engineroom.actors.runner import JobRunner
from engineroom.core.broker import build_broker, start_in_process_worker
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.ids import new_id
from engineroom.models.event import Event
from engineroom.models.job import JobDocument, JobState
from engineroom.notifications.bus import LocalEventBus


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def runner(settings: Settings, mongodb_url: str) -> Iterator[tuple[JobRunner, Recorder]]:
    """A runner on a booted in-process worker (whose AsyncIO loop thread it uses), and the events it publishes."""
    settings = settings.model_copy(update={"mongodb_url": mongodb_url})
    load_task_modules()
    broker = build_broker(settings, in_process=True)
    bus, recorder = LocalEventBus(), Recorder()
    bus.subscribe(recorder)
    job_runner = JobRunner(settings, bus, broker)
    declare_engine_actors(broker, settings, job_runner)
    worker = start_in_process_worker(broker, threads=1, worker_timeout_ms=50)
    yield job_runner, recorder
    worker.stop()
    broker.close()


def store_job(runner: JobRunner, **fields: Any) -> JobDocument:
    now = utcnow()
    job = JobDocument(
        **{
            "id": new_id(),
            "tenant_id": "acme",
            "user_id": "alice",
            "engine": "general",
            "task": "general.demo",
            "payload": {"duration_s": 0, "steps": 1},
            "state": JobState.QUEUED,
            "created_at": now,
            **fields,
        }
    )

    return runner._call(lambda stores: stores.jobs.insert(job))


def stored(runner: JobRunner, job_id: str) -> JobDocument:
    job = runner._call(lambda stores: stores.jobs.get(job_id))
    assert job is not None
    return job


@pytest.mark.parametrize("state", [JobState.CANCELLED, JobState.RUNNING, JobState.COMPLETED, JobState.SCHEDULED])
def test_a_job_that_is_no_longer_queued_is_not_run(runner: tuple[JobRunner, Recorder], state: JobState) -> None:
    job_runner, recorder = runner
    job = store_job(job_runner, state=state)
    job_runner.run_job(job.id)
    assert stored(job_runner, job.id).state == state
    assert stored(job_runner, job.id).attempts == 0
    assert recorder.events == []


def test_a_queued_job_is_run_once_even_if_its_message_comes_twice(runner: tuple[JobRunner, Recorder]) -> None:
    job_runner, recorder = runner
    job = store_job(job_runner)
    job_runner.run_job(job.id)
    job_runner.run_job(job.id)
    final = stored(job_runner, job.id)
    assert final.state == JobState.COMPLETED and final.attempts == 1
    assert [str(event.type) for event in recorder.events] == ["job.started", "job.progress", "job.completed"]


def test_a_message_for_an_unknown_job_is_dropped(runner: tuple[JobRunner, Recorder]) -> None:
    job_runner, recorder = runner
    job_runner.run_job(new_id())
    assert recorder.events == []


def test_a_job_whose_task_is_not_registered_here_fails_with_a_clear_error(runner: tuple[JobRunner, Recorder]) -> None:
    job_runner, recorder = runner
    job = store_job(job_runner, task="general.gone")
    job_runner.run_job(job.id)
    final = stored(job_runner, job.id)
    assert final.state == JobState.FAILED and final.error is not None
    assert final.error.type == "InvalidRequest" and "general.gone" in final.error.message
    assert [str(event.type) for event in recorder.events] == ["job.failed"]


def test_a_stored_payload_that_no_longer_fits_fails_the_job(runner: tuple[JobRunner, Recorder]) -> None:
    job_runner, _ = runner
    job = store_job(job_runner, payload={"steps": "many"})
    job_runner.run_job(job.id)
    final = stored(job_runner, job.id)
    assert final.state == JobState.FAILED and final.error is not None and "steps" in final.error.message
