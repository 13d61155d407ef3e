"""A worker process's stop, bounded: running jobs get the grace period (``engineroom worker --grace-s``), then the
process winds down within ``EXIT_MARGIN_S`` whatever MongoDB does, and logs each job it abandoned and how that job
comes back.

Dramatiq's own stop (``Worker.stop``) waits up to the grace for worker threads, then returns prefetched messages and
closes its consumers, which hands the messages of unfinished jobs back to RabbitMQ; its worker threads are daemons,
so an unfinished job never holds the process. What did hold it (issue 16) were database calls after that: the
shutdown hooks' own, and motor's threads stuck in calls to a MongoDB that stopped answering. Here the hooks' calls
share ``SHUTDOWN_DB_BUDGET_S`` (``LoopStores.stop_waiting_after``), and an ``ExitDeadline`` ends the process if it
outlives its grace plus the margin, or ``LINGER_S`` after its stop finished.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Protocol

from dramatiq import Broker, Middleware, Worker

from engineroom.actors.loop_stores import on_worker_lifecycle
from engineroom.actors.presence import WorkerPresence
from engineroom.actors.runner import JobRunner
from engineroom.core.shutdown import EXIT_MARGIN_S, SHUTDOWN_DB_BUDGET_S, ExitDeadline

logger = logging.getLogger(__name__)

#: The signals on which Dramatiq's worker process stops (SIGHUP: the command reloads).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_SignalHandler = Callable[[int, FrameType | None], Any]


class _Waiter(Protocol):
    def stop_waiting_after(self, seconds: float) -> None: ...


class ShutdownDeadline(Middleware):
    """Arms the process's ``ExitDeadline`` when the worker starts stopping, and once its threads are done, logs the
    jobs still running and makes every database wait give up within ``SHUTDOWN_DB_BUDGET_S``."""

    def __init__(
        self, runner: JobRunner, presence: WorkerPresence, waiters: Sequence[_Waiter], *, grace_s: float
    ) -> None:
        self.runner = runner
        self.presence = presence
        self.waiters = waiters
        self.grace_s = grace_s
        self.deadline = ExitDeadline(describe=self._abandoned_jobs)

    def install(self, broker: Broker) -> None:
        """Add this middleware right after ``WorkerPresence`` (so its ``after_worker_shutdown`` runs after every
        other but presence's, once the loop has stopped), and its hook as the last one registered: it runs first
        (call after ``WorkerPresence.install``). In a Dramatiq worker process, also arm the deadline at the stop
        signal itself: Dramatiq's process looks at its stop flag once a second, and not at all while it boots, where
        the runner's first calls wait on MongoDB for as long as the driver does."""
        broker.add_middleware(self, after=WorkerPresence)
        on_worker_lifecycle(broker, shutdown=self._give_up)
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if callable(previous):  # Dramatiq's handler: we are in its worker process
                signal.signal(signum, functools.partial(self._on_stop_signal, previous))

    def _on_stop_signal(self, dramatiq_handler: _SignalHandler, signum: int, frame: FrameType | None) -> None:
        self._arm()
        dramatiq_handler(signum, frame)

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._arm()  # a stop without a signal (an embedding that calls ``Worker.stop``)

    def _arm(self) -> None:
        self.deadline.arm(
            self.grace_s + EXIT_MARGIN_S, f"its {self.grace_s:g} s grace and the {EXIT_MARGIN_S:g} s margin ran out"
        )

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self.deadline.finish(self.presence.exit_code)

    def _give_up(self) -> None:
        for job in self._abandoned_jobs():
            logger.warning("abandoned %s", job)
        for waiter in self.waiters:
            waiter.stop_waiting_after(SHUTDOWN_DB_BUDGET_S)

    def _abandoned_jobs(self) -> list[str]:
        return [
            f"job {job_id}: still running when the {self.grace_s:g} s grace ran out; its message went back to "
            f"RabbitMQ unacknowledged, and the scheduler re-queues it once its lease lapses "
            f"(within {self.runner.settings.job_lease_s:g} s)"
            for job_id in sorted(self.runner.running.ids())
        ]
