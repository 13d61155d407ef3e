"""The supervisor's loop applies decisions to its children and reports itself, with the store and children faked."""

from __future__ import annotations

import signal

from engineroom.autoscale.children import WorkerCommand
from engineroom.autoscale.policy import Policy
from engineroom.autoscale.supervisor import Supervisor
from engineroom.core.errors import StoreUnavailable
from engineroom.core.pressure import Limits, Readings
from engineroom.models.worker import ProcessKind, WorkerPublic

COMMAND = WorkerCommand(["general"], threads=2, grace_s=60, notifications=False, metrics_port=0)
#: No sustain window or cooldown: each check acts on what it sees.
EAGER = Policy(1, 2, backlog_per_process=4, sustain_s=0, cooldown_s=0, limits=Limits())


class FakeChildren:
    def __init__(self) -> None:
        self.active = 0
        self.draining = 0
        self.signals: list[signal.Signals] = []

    def start(self) -> int:
        self.active += 1
        return 1000 + self.active

    def drain_newest(self) -> int | None:
        self.active, self.draining = self.active - 1, self.draining + 1
        return 2000

    def reap(self) -> list[tuple[int, int, bool]]:
        return []

    def forward(self, signum: signal.Signals) -> None:
        self.signals.append(signum)
        self.active, self.draining = 0, 0

    @property
    def alive(self) -> bool:
        return False


class FakeStats:
    def __init__(self, *backlogs: int | None) -> None:
        self.backlogs = list(backlogs)

    async def ready(self, engines: list[str]) -> int:
        backlog = self.backlogs.pop(0)
        if backlog is None:
            raise StoreUnavailable()
        return backlog


class FakeWorkers:
    def __init__(self) -> None:
        self.beats: list[WorkerPublic] = []
        self.removed: list[str] = []

    async def beat(self, process: WorkerPublic) -> None:
        self.beats.append(process)

    async def remove(self, process_id: str) -> None:
        self.removed.append(process_id)


def make(*backlogs: int | None) -> tuple[Supervisor, FakeChildren, FakeWorkers]:
    workers = FakeWorkers()
    supervisor = Supervisor(
        COMMAND,
        EAGER,
        stats=FakeStats(*backlogs),  # type: ignore[arg-type]
        workers=workers,  # type: ignore[arg-type]
        read_host=lambda: Readings(cpu_percent=10, memory_percent=20, rss_mb=30),
    )
    children = FakeChildren()
    supervisor.children = children  # type: ignore[assignment]
    return supervisor, children, workers


async def test_it_starts_the_minimum_then_follows_the_backlog_and_reports_each_check() -> None:
    supervisor, children, workers = make(0, 9, 9, 0)
    await supervisor.check()
    assert children.active == 1
    await supervisor.check()
    assert children.active == 2
    await supervisor.check()  # at the maximum: blocked, still 2
    assert children.active == 2
    await supervisor.check()
    assert (children.active, children.draining) == (1, 1)
    last = workers.beats[-1]
    assert last.kind == ProcessKind.SUPERVISOR and last.engines == ["general"]
    assert last.autoscale is not None
    assert (last.autoscale.processes, last.autoscale.draining, last.autoscale.backlog) == (1, 1, 0)
    assert last.autoscale.last_decision is not None
    assert last.autoscale.last_decision.startswith("scale down general 2→1 (draining pid 2000): no ready jobs")
    assert [beat.autoscale.processes for beat in workers.beats if beat.autoscale] == [1, 2, 2, 1]


async def test_without_mongodb_it_still_keeps_the_minimum_and_nothing_more() -> None:
    supervisor, children, workers = make(None, 9, None)
    await supervisor.check()
    assert children.active == 1  # started although the count failed
    await supervisor.check()
    assert children.active == 2
    await supervisor.check()
    assert children.active == 2 and len(workers.beats) == 2


async def test_stopping_sends_each_child_one_sigterm_and_removes_the_document() -> None:
    supervisor, children, workers = make(0)
    await supervisor.check()
    await supervisor.stop()
    assert children.signals == [signal.SIGTERM]
    assert workers.removed == [supervisor.identity]


def test_children_get_consecutive_metrics_ports_and_one_process_each() -> None:
    command = WorkerCommand(["general", "text_intelligence"], 4, 30.0, True, metrics_port=9191)
    assert command.argv()[-10:] == [
        "worker",
        "--processes",
        "1",
        "--engines",
        "general,text_intelligence",
        "--threads",
        "4",
        "--grace-s",
        "30.0",
        "--notifications",
    ]
    assert command.environment(2)["ENGINEROOM_WORKER_METRICS_PORT"] == "9193"
    assert COMMAND.environment(2)["ENGINEROOM_WORKER_METRICS_PORT"] == "0"
