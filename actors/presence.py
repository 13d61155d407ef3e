"""A worker process's presence: its heartbeat document in ``workers``, backpressure, and recycling.

Every heartbeat it reads the host (``core/pressure.py``), pauses or resumes its Dramatiq consumers (pausing
stops fetching new messages; jobs already running finish), and upserts its document for ``GET /workers``.

Recycling relies on how Dramatiq's CLI treats a worker process that exits (``dramatiq/cli.py`` ``main``): it
does **not** restart it; it logs "exited unexpectedly", sends SIGTERM to its sibling processes (which finish
their jobs within ``--worker-shutdown-timeout``) and exits with the child's code. ``--watch`` and SIGHUP reloads
re-exec the whole command, but only for file changes or signals from outside. So a process over its RSS ceiling
pauses, waits until no job of its runs, stops itself like a SIGTERM would (leases released, prefetched
messages requeued, its document deleted) and exits with ``RECYCLE_EXIT_CODE``, a non-zero code, so the
supervisor that runs ``engineroom worker`` (docker ``restart:``, systemd ``Restart=on-failure``, Kubernetes)
starts it again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable

from dramatiq import Broker, Middleware, Worker

from engineroom.actors.loop_stores import on_worker_lifecycle
from engineroom.actors.runner import JobRunner
from engineroom.core.clock import utcnow
from engineroom.core.config import ENGINES, Settings
from engineroom.core.errors import EngineroomError
from engineroom.core.pressure import HostReader, Limits, Readings, Verdict, judge
from engineroom.models.worker import Backpressure, ProcessKind, WorkerPublic

logger = logging.getLogger(__name__)

#: The exit code of a worker process that recycles itself (EX_TEMPFAIL: "try again"); non-zero, so
#: ``on-failure`` restart policies restart it.
RECYCLE_EXIT_CODE = 75


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.worker_max_cpu_percent, settings.worker_max_memory_percent, settings.worker_max_rss_mb)


class WorkerPresence(Middleware):
    """Reports this worker process and applies backpressure; one per process, beating on the runner's heartbeat.

    Put first in the broker's middleware (``install``): Dramatiq runs ``after_*`` hooks in reverse, so its
    ``after_worker_shutdown`` (which exits with ``RECYCLE_EXIT_CODE``) runs after every other middleware's.
    """

    def __init__(self, settings: Settings, runner: JobRunner, read: Callable[[], Readings] | None = None) -> None:
        self.settings = settings
        self.runner = runner
        self.limits = limits_of(settings)
        self._read = read
        self.started_at = utcnow()
        self._worker: Worker | None = None
        self._paused = False
        #: Sticky once decided: the RSS of a Python process rarely goes down again.
        self.recycling = False
        self._exiting = False
        self._stopping = False
        #: Set once the document is deleted; the lock keeps a beat in flight from writing it back.
        self._gone = False
        self._report_lock = threading.Lock()

    def install(self, broker: Broker) -> None:
        """Add this middleware first on ``broker``, beat with the runner's heartbeat, and delete the document once
        worker threads are done (call after ``declare_engine_actors``: this shutdown hook then runs before the
        runner closes its stores)."""
        broker.add_middleware(self, before=type(broker.middleware[0]))
        self.runner.on_heartbeat(self.beat)
        on_worker_lifecycle(broker, shutdown=self._forget)

    @property
    def exit_code(self) -> int:
        """The code this process exits with once stopped: ``RECYCLE_EXIT_CODE`` if it is recycling itself, else 0."""
        return RECYCLE_EXIT_CODE if self._exiting else 0

    # -- Dramatiq hooks --

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._worker = worker
        if self._read is None:
            self._read = HostReader()
        self.beat()  # listed at once, not a heartbeat later

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stopping = True

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        if self._exiting:
            # SystemExit is not an Exception: it passes Dramatiq's hook guard and ends the worker process with
            # this code (multiprocessing turns it into the exit code) after everything else shut down.
            raise SystemExit(RECYCLE_EXIT_CODE)

    # -- the heartbeat --

    def beat(self) -> None:
        """Judge the readings, pause or resume, start recycling when idle, and upsert this process's document."""
        if self._worker is None or self._read is None:
            return
        readings = self._read()
        verdict = judge(readings, self.limits)
        if not self._stopping:
            self.recycling = self.recycling or verdict.recycle
            self._set_paused(verdict.pause or self.recycling, verdict.reasons)
            if self.recycling and not self.runner.running.ids():
                self._exit_for_recycling(verdict)
        report = self.describe(readings, verdict)
        with self._report_lock:
            if not self._gone:
                self.runner.call_heartbeat_stores(lambda stores: stores.workers.beat(report))

    def describe(self, readings: Readings, verdict: Verdict) -> WorkerPublic:
        # Stamped before the jobs are listed: a job missing from the list began its admission after the stamp, so
        # its ``started_at`` is later, and the scheduler does not read the report as leaving it out (orphans.py).
        stamped_at = utcnow()
        worker = self._worker
        queues = set(worker.consumers) if worker is not None else set()
        return WorkerPublic(
            id=self.runner.worker_id,
            kind=ProcessKind.WORKER,
            host=socket.gethostname(),
            pid=os.getpid(),
            engines=[engine for engine in ENGINES if self.settings.queue_name(engine) in queues],
            threads=worker.worker_threads if worker is not None else None,
            current_job_ids=self.runner.held_job_ids(),
            backpressure=Backpressure(
                paused=self._paused,
                reasons=verdict.reasons,
                recycling=self.recycling,
                cpu_percent=readings.cpu_percent,
                memory_percent=readings.memory_percent,
                rss_mb=round(readings.rss_mb, 1),
            ),
            started_at=self.started_at,
            last_heartbeat=stamped_at,
        )

    def _set_paused(self, pause: bool, reasons: list[str]) -> None:
        if pause == self._paused or self._worker is None:
            return
        for consumer in self._worker.consumers.values():
            if pause:
                consumer.pause()
            else:
                consumer.resume()
        self._paused = pause
        if pause:
            logger.warning("taking no new jobs: %s", "; ".join(reasons))
        else:
            logger.info("taking new jobs again")

    def _exit_for_recycling(self, verdict: Verdict) -> None:
        logger.warning("recycling this worker process (%s): stopping, to be restarted", "; ".join(verdict.reasons))
        self._exiting = True
        self._stopping = True
        os.kill(os.getpid(), signal.SIGTERM)  # Dramatiq's own graceful stop; ``after_worker_shutdown`` exits

    def _forget(self) -> None:
        """Delete this process's document (a clean stop leaves the list at once)."""
        with self._report_lock:
            self._gone = True
        try:
            self.runner.call_stores(lambda stores: stores.workers.remove(self.runner.worker_id))
        except (EngineroomError, RuntimeError):
            logger.warning("could not remove this worker's heartbeat document; it lapses by itself", exc_info=True)
