"""WorkerPresence with injected readings: it pauses and resumes consumers, reports itself, and recycles only once
idle, exiting with its own code after Dramatiq's graceful stop."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import pytest
from dramatiq import Broker, Worker

from engineroom.actors.presence import RECYCLE_EXIT_CODE, WorkerPresence
from engineroom.actors.runner import JobRunner
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.pressure import Readings
from engineroom.models.worker import WorkerPublic

CALM = Readings(cpu_percent=10, memory_percent=30, rss_mb=100)


@dataclass
class FakeConsumer:
    paused: bool = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


@dataclass
class FakeWorker:
    consumers: dict[str, FakeConsumer]
    worker_threads: int = 4


@dataclass
class FakeWorkerStore:
    reports: list[WorkerPublic] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    async def beat(self, process: WorkerPublic) -> None:
        self.reports.append(process)

    async def remove(self, process_id: str) -> None:
        self.removed.append(process_id)


@dataclass
class FakeRunning:
    job_ids: set[str] = field(default_factory=set)

    def ids(self) -> set[str]:
        return set(self.job_ids)


@dataclass
class FakeRunner:
    worker_id: str = "host:1:abc"
    running: FakeRunning = field(default_factory=FakeRunning)
    workers: FakeWorkerStore = field(default_factory=FakeWorkerStore)
    beats: list[Callable[[], None]] = field(default_factory=list)

    def call_stores(self, operation: Callable[[Any], Awaitable[Any]]) -> Any:
        return asyncio.run(_apply(operation, self))

    call_heartbeat_stores = call_stores

    def on_heartbeat(self, beat: Callable[[], None]) -> None:
        self.beats.append(beat)

    def held_job_ids(self) -> list[str]:
        return sorted(self.running.ids())


async def _apply(operation: Callable[[Any], Awaitable[Any]], stores: Any) -> Any:
    return await operation(stores)


@dataclass
class Scenario:
    presence: WorkerPresence
    runner: FakeRunner
    worker: FakeWorker
    readings: list[Readings]
    kills: list[tuple[int, int]]

    def beat(self, readings: Readings) -> WorkerPublic:
        self.readings[0] = readings
        self.presence.beat()
        return self.runner.workers.reports[-1]


@pytest.fixture
def scenario(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    limits = {"worker_max_cpu_percent": 80.0, "worker_max_memory_percent": 90.0, "worker_max_rss_mb": 512.0}
    settings = settings.model_copy(update=limits)
    runner = FakeRunner()
    readings = [CALM]
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr("engineroom.actors.presence.os.kill", lambda pid, signum: kills.append((pid, signum)))
    presence = WorkerPresence(settings, cast(JobRunner, runner), read=lambda: readings[0])
    queues = [settings.queue_name("general"), settings.queue_name("image_generation"), settings.notifications_queue]
    worker = FakeWorker({queue: FakeConsumer() for queue in queues})
    presence.after_worker_boot(cast(Broker, None), cast(Worker, worker))
    return Scenario(presence, runner, worker, readings, kills)


def test_it_reports_itself_at_boot_with_its_engines_and_threads(scenario: Scenario) -> None:
    (report,) = scenario.runner.workers.reports
    assert report.id == "host:1:abc" and report.kind == "worker"
    assert report.engines == ["image_generation", "general"]
    assert report.threads == 4
    assert report.backpressure.paused is False and report.backpressure.cpu_percent == 10


def test_a_busy_host_pauses_every_consumer_until_it_calms_down(scenario: Scenario) -> None:
    report = scenario.beat(Readings(cpu_percent=95, memory_percent=30, rss_mb=100))
    assert all(consumer.paused for consumer in scenario.worker.consumers.values())
    assert report.backpressure.paused and report.backpressure.reasons == ["host CPU 95% > 80%"]
    report = scenario.beat(CALM)
    assert not any(consumer.paused for consumer in scenario.worker.consumers.values())
    assert not report.backpressure.paused and report.backpressure.reasons == []
    assert scenario.kills == []


def test_passing_the_rss_ceiling_drains_then_exits_with_the_recycle_code(scenario: Scenario) -> None:
    # Given a job still running when the RSS ceiling is passed
    scenario.runner.running.job_ids = {"job-1"}
    report = scenario.beat(Readings(cpu_percent=10, memory_percent=30, rss_mb=600))
    # Then the worker takes no new jobs but does not stop yet
    assert report.backpressure.recycling and report.backpressure.paused
    assert all(consumer.paused for consumer in scenario.worker.consumers.values())
    assert scenario.kills == []
    # When the job is done (and even if RSS reads lower now), it stops itself like a SIGTERM would
    scenario.runner.running.job_ids = set()
    scenario.beat(CALM)
    assert [signum for _pid, signum in scenario.kills] == [signal.SIGTERM]
    assert all(consumer.paused for consumer in scenario.worker.consumers.values())
    # And once Dramatiq's graceful stop is over, the process exits with the recycle code
    with pytest.raises(SystemExit) as exit_info:
        scenario.presence.after_worker_shutdown(cast(Broker, None), cast(Worker, scenario.worker))
    assert exit_info.value.code == RECYCLE_EXIT_CODE


def test_a_stop_from_outside_is_not_turned_into_a_recycle(scenario: Scenario) -> None:
    scenario.presence.before_worker_shutdown(cast(Broker, None), cast(Worker, scenario.worker))
    scenario.beat(Readings(cpu_percent=10, memory_percent=30, rss_mb=600))
    assert scenario.kills == []
    scenario.presence.after_worker_shutdown(cast(Broker, None), cast(Worker, scenario.worker))  # no SystemExit


def test_a_clean_stop_deletes_the_document_and_later_beats_do_not_write_it_back(scenario: Scenario) -> None:
    scenario.presence._forget()
    assert scenario.runner.workers.removed == ["host:1:abc"]
    reports = len(scenario.runner.workers.reports)
    scenario.presence.beat()
    assert len(scenario.runner.workers.reports) == reports


def test_a_report_is_stamped_before_it_lists_the_jobs(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    # A job missing from the list began its admission after the stamp, so its started_at is later than the report's
    # last_heartbeat: the scheduler never reads such a report as "reported since the start without the job".
    listed_at: list[datetime] = []

    def held_job_ids() -> list[str]:
        listed_at.append(utcnow())
        time.sleep(0.002)  # past the clock's millisecond
        return []

    monkeypatch.setattr(scenario.runner, "held_job_ids", held_job_ids)
    report = scenario.beat(CALM)
    assert listed_at and report.last_heartbeat <= listed_at[0]
