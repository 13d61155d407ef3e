"""``engineroom worker --autoscale MIN:MAX``: every ``autoscale_interval_s`` count the engines' ready jobs, read the
host, decide (``autoscale/policy.py``), start or drain one worker process (``autoscale/children.py``), and report
in ``GET /workers`` as a ``supervisor``. SIGTERM or SIGINT drains every child and waits for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from datetime import datetime

from engineroom.autoscale.children import WorkerCommand, WorkerProcesses
from engineroom.autoscale.policy import Action, Decision, Observation, Policy, Trend, decide
from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.errors import StoreUnavailable
from engineroom.core.ids import process_identity
from engineroom.core.pressure import HostReader, Limits, Readings
from engineroom.core.shutdown import EXIT_MARGIN_S, SHUTDOWN_DB_BUDGET_S, ExitDeadline
from engineroom.models.worker import Autoscale, ProcessKind, WorkerPublic
from engineroom.store.client import bounded, connect
from engineroom.store.stats import JobStats
from engineroom.store.workers import WorkerStore

logger = logging.getLogger(__name__)

#: Seconds between looks at draining children while the supervisor stops.
STOP_POLL_S = 0.2


def policy_from(settings: Settings, min_processes: int, max_processes: int) -> Policy:
    """The autoscale settings, with the workers' own CPU and memory backpressure thresholds as headroom."""
    return Policy(
        min_processes=min_processes,
        max_processes=max_processes,
        backlog_per_process=settings.autoscale_backlog_per_process,
        sustain_s=settings.autoscale_sustain_s,
        cooldown_s=settings.autoscale_cooldown_s,
        limits=Limits(settings.worker_max_cpu_percent, settings.worker_max_memory_percent),
    )


class Supervisor:
    """Runs the checks; each is a count, a reading, one pure decision, and at most one process change."""

    def __init__(
        self,
        command: WorkerCommand,
        policy: Policy,
        *,
        stats: JobStats,
        workers: WorkerStore,
        read_host: Callable[[], Readings],
    ) -> None:
        self.command = command
        self.policy = policy
        self.stats = stats
        self.workers = workers
        self.read_host = read_host
        self.children = WorkerProcesses(command)
        self.identity = process_identity()
        self.started_at = utcnow()
        self.trend = Trend()
        self.backlog = 0
        self.last: Decision | None = None
        self.last_change: tuple[str, datetime] | None = None

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Check every ``interval_s`` until ``stop`` is set, then drain every child and wait for it. A check under way
        when ``stop`` is set is cancelled: it may be waiting on a MongoDB that stopped answering."""
        while not stop.is_set():
            check = asyncio.create_task(self.check())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({check, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (check, stopping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
        await self.stop()

    async def check(self) -> None:
        """One round; a MongoDB outage skips it but for keeping ``min_processes`` (the children keep working)."""
        self._reap()
        try:
            self.backlog = await self.stats.ready(self.command.engines)
        except StoreUnavailable:
            logger.warning("could not count the backlog; keeping %d process(es)", self.children.active)
            if self.children.active >= self.policy.min_processes:
                return  # below the minimum (at start, or after a crash) the last count serves to start some
        seen = Observation(time.monotonic(), self.children.active, self.backlog, self.read_host())
        decision = decide(seen, self.trend, self.policy)
        self.trend = decision.trend
        self._apply(decision, seen.processes)
        await self._beat()

    async def stop(self) -> None:
        """SIGTERM every child (Dramatiq's graceful stop), leave ``GET /workers``, and wait until each child has
        finished its jobs and exited (each within its own grace and margin: ``core/shutdown.py``)."""
        logger.info("stopping: draining %d worker process(es)", self.children.active)
        self.children.forward(signal.SIGTERM)
        try:
            with bounded(SHUTDOWN_DB_BUDGET_S):  # while the children drain; MongoDB may be gone
                await self.workers.remove(self.identity)
        except StoreUnavailable:
            logger.warning("could not remove the supervisor's heartbeat document; it lapses by itself")
        while self.children.alive:
            await asyncio.sleep(STOP_POLL_S)
            self._reap()
        self._reap()

    def _apply(self, decision: Decision, processes: int) -> None:
        engines = ",".join(self.command.engines)
        if decision.action == Action.UP:
            for _ in range(decision.target - processes):
                self.children.start()
            self._record(f"scale up {engines} {processes}→{decision.target}: {decision.reason}")
        elif decision.action == Action.DOWN:
            pid = self.children.drain_newest()
            self._record(f"scale down {engines} {processes}→{decision.target} (draining pid {pid}): {decision.reason}")
        elif decision.action == Action.BLOCKED and (self.last is None or self.last.action != Action.BLOCKED):
            logger.warning("not scaling up %s: %s", engines, decision.reason)  # once per blocked stretch
        self.last = decision

    def _record(self, text: str) -> None:
        logger.info("%s", text)
        self.last_change = (text, utcnow())

    def _reap(self) -> None:
        for pid, code, draining in self.children.reap():
            if draining:
                logger.info("worker process %d drained and exited (code %d)", pid, code)
            else:
                logger.warning("worker process %d exited by itself (code %d)", pid, code)

    async def _beat(self) -> None:
        last, decided_at = self.last_change or (None, None)
        status = Autoscale(
            processes=self.children.active,
            draining=self.children.draining,
            min_processes=self.policy.min_processes,
            max_processes=self.policy.max_processes,
            backlog=self.backlog,
            last_decision=last,
            decided_at=decided_at,
        )
        report = WorkerPublic(
            id=self.identity,
            kind=ProcessKind.SUPERVISOR,
            host=socket.gethostname(),
            pid=os.getpid(),
            engines=self.command.engines,
            threads=self.command.threads,
            autoscale=status,
            started_at=self.started_at,
            last_heartbeat=utcnow(),
        )
        try:
            await self.workers.beat(report)
        except StoreUnavailable:
            logger.warning("could not write the supervisor's heartbeat document")


async def supervise(settings: Settings, command: WorkerCommand, policy: Policy, deadline: ExitDeadline) -> int:
    """Run a supervisor until SIGTERM or SIGINT; SIGHUP is passed to the children (Dramatiq's reload). Once told to
    stop, ``deadline`` ends it if its children are not gone within their grace plus twice ``EXIT_MARGIN_S`` (theirs,
    then its own): a child left behind then stops by its own deadline."""
    client = connect(settings)
    db = client[settings.mongodb_db]
    # Beats come every interval: the document must outlive the gap between two of them.
    stale_after_s = max(settings.job_lease_s, 3 * settings.autoscale_interval_s)
    supervisor = Supervisor(
        command,
        policy,
        stats=JobStats(db),
        workers=WorkerStore(db, stale_after_s=stale_after_s),
        read_host=HostReader(),
    )
    deadline.describe = lambda: [f"worker process {pid}, still draining" for pid in supervisor.children.running_pids()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def begin_stop() -> None:
        why = f"its children's {command.grace_s:g} s grace and twice the {EXIT_MARGIN_S:g} s margin ran out"
        deadline.arm(command.grace_s + 2 * EXIT_MARGIN_S, why)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, begin_stop)
    loop.add_signal_handler(signal.SIGHUP, supervisor.children.forward, signal.SIGHUP)
    try:
        await supervisor.run(stop, settings.autoscale_interval_s)
    finally:
        with bounded(SHUTDOWN_DB_BUDGET_S):
            client.close()
    return 0
