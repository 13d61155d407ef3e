"""JobRunner against a real SecantusDB: it runs only queued jobs and records every outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from engineroom.actors import loop_stores
from engineroom.actors import runner as runner_module
from engineroom.actors.engines import declare_engine_actors
from engineroom.actors.runner import JobRunner
from engineroom.actors.start_write import START_WRITE_DELAY_S
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.ids import new_id
from engineroom.messaging.broker import build_broker, start_in_process_worker
from engineroom.messaging.bus import LocalEventBus
from engineroom.models.event import Event
from engineroom.models.job import JobDocument, JobState
from engineroom.services.registry import load_task_modules
from engineroom.store.client import connect


class JobWrites(CommandListener):
    """Counts the updates of job documents the runner's own client sends, and lists the types of the events each of
    its inserts into ``events`` records."""

    def __init__(self) -> None:
        self.count = 0
        self.event_inserts: list[list[str]] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "update" and event.command.get("update") == "jobs":
            self.count += len(event.command.get("updates", []))
        if event.command_name == "insert" and event.command.get("insert") == "events":
            self.event_inserts.append([document["type"] for document in event.command.get("documents", [])])

    def succeeded(self, event: CommandSucceededEvent) -> None:
        """Counted when started."""

    def failed(self, event: CommandFailedEvent) -> None:
        """Counted when started."""


@pytest.fixture
def job_writes(monkeypatch: pytest.MonkeyPatch) -> JobWrites:
    """The job updates of every client the runner makes from now on."""
    writes = JobWrites()
    monkeypatch.setattr(loop_stores, "connect", lambda settings: connect(settings, event_listeners=[writes]))
    return writes


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def runner(settings: Settings, mongodb_url: str, job_writes: JobWrites) -> Iterator[tuple[JobRunner, Recorder]]:
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


def test_a_short_job_gets_one_write_for_its_start_and_its_outcome(
    runner: tuple[JobRunner, Recorder], job_writes: JobWrites
) -> None:
    job_runner, recorder = runner
    job = store_job(job_runner)
    before = job_writes.count
    job_runner.run_job(job.id)
    done = stored(job_runner, job.id)
    assert done.state == JobState.COMPLETED and done.attempts == 1 and done.started_at is not None
    assert [entry.state for entry in done.history] == [JobState.RUNNING, JobState.COMPLETED]
    assert job_writes.count - before == 1  # a single write took it queued → running → completed
    assert [event.type for event in recorder.events] == ["job.started", "job.progress", "job.completed"]


def test_a_short_job_alone_in_its_process_announces_its_start_before_its_outcome_is_written(
    runner: tuple[JobRunner, Recorder], job_writes: JobWrites
) -> None:
    # Given no other job in the process: nothing would share its start's record but its own outcome
    job_runner, _ = runner
    job = store_job(job_runner)
    # When it runs
    job_runner.run_job(job.id)
    # Then its start was recorded (and announced) at once, not held for its outcome's write (its progress, 5 ms
    # later, may ride along if the write has not begun, or go with the outcome)
    assert job_writes.event_inserts[0][0] == "job.started" and "job.completed" not in job_writes.event_inserts[0]
    assert sum(job_writes.event_inserts, []) == ["job.started", "job.progress", "job.completed"]


def test_beside_another_job_a_short_jobs_start_shares_the_write_of_its_outcome(
    runner: tuple[JobRunner, Recorder], job_writes: JobWrites, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another job holding a slot in this process (and a start that lingers long enough for a loaded machine)
    monkeypatch.setattr(runner_module, "EVENT_LINGER_S", 1.0)
    job_runner, _ = runner
    job_runner.slots.add(new_id(), "general")
    job = store_job(job_runner)
    # When a short job runs
    job_runner.run_job(job.id)
    # Then its start waited for company, and went with its outcome: one write for its three events
    assert job_writes.event_inserts == [["job.started", "job.progress", "job.completed"]]


def test_a_job_still_running_after_the_start_delay_is_written_running_first(
    runner: tuple[JobRunner, Recorder], job_writes: JobWrites
) -> None:
    job_runner, _ = runner
    job = store_job(job_runner, payload={"duration_s": START_WRITE_DELAY_S * 4, "steps": 1})
    before = job_writes.count
    seen: list[JobState] = []
    watcher = threading.Thread(target=lambda: seen.extend(_states_while_running(job_runner, job.id)))
    watcher.start()
    job_runner.run_job(job.id)
    watcher.join()
    done = stored(job_runner, job.id)
    assert JobState.RUNNING in seen
    assert done.state == JobState.COMPLETED and done.attempts == 1
    assert [entry.state for entry in done.history] == [JobState.RUNNING, JobState.COMPLETED]
    assert job_writes.count - before >= 2  # the start, the outcome (and progress, while it ran)


def test_a_job_cancelled_before_its_start_was_written_keeps_its_cancellation(
    runner: tuple[JobRunner, Recorder],
) -> None:
    job_runner, recorder = runner
    job = store_job(job_runner, payload={"duration_s": START_WRITE_DELAY_S / 2, "steps": 1})

    def cancel_soon() -> None:
        time.sleep(START_WRITE_DELAY_S / 5)
        job_runner._call(lambda stores: stores.jobs.cancel(job.id, expected=[JobState.QUEUED], detail="by alice"))

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    job_runner.run_job(job.id)
    canceller.join()
    time.sleep(START_WRITE_DELAY_S * 2)  # not an assertion: a start write left armed would have fired by now
    assert stored(job_runner, job.id).state == JobState.CANCELLED
    assert "job.completed" not in [event.type for event in recorder.events]


def _states_while_running(job_runner: JobRunner, job_id: str) -> list[JobState]:
    states: list[JobState] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not states or states[-1] not in (JobState.COMPLETED, JobState.FAILED)):
        states.append(stored(job_runner, job_id).state)
        time.sleep(0.02)
    return states


def test_a_redelivered_job_has_its_start_written_before_it_runs(
    runner: tuple[JobRunner, Recorder], monkeypatch: pytest.MonkeyPatch, job_writes: JobWrites
) -> None:
    # The worker that held the message died, perhaps in the job's first moments, before its start was written:
    # this attempt is counted first, so a job that kills its worker each time still runs out of attempts.
    monkeypatch.setattr(runner_module, "_is_redelivery", lambda: True)
    job_runner, _ = runner
    job = store_job(job_runner)
    before = job_writes.count
    job_runner.run_job(job.id)
    done = stored(job_runner, job.id)
    assert done.state == JobState.COMPLETED and done.attempts == 1
    assert job_writes.count - before == 2  # the start, then the outcome: two writes even for a job this short
