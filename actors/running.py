"""Which jobs this worker process is running, on which threads, and interrupting one when it is cancelled.

Dramatiq's abort support needs Redis; on RabbitMQ we do what its ``TimeLimit`` does: raise an exception in the
worker thread (``dramatiq.threading.raise_thread_exception``), here ``JobCancelled``.
"""

from __future__ import annotations

import logging
import threading

from dramatiq.threading import raise_thread_exception

from engineroom.core.errors import JobCancelled

logger = logging.getLogger(__name__)


class RunningJobs:
    """Thread-safe registry of the jobs whose task code is executing in this process."""

    def __init__(self) -> None:
        self._threads: dict[str, int] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def enter(self, job_id: str) -> None:
        """The calling thread starts running the job's task."""
        with self._lock:
            self._threads[job_id] = threading.get_ident()

    def leave(self, job_id: str) -> None:
        with self._lock:
            self._threads.pop(job_id, None)
            self._cancelled.discard(job_id)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._threads)

    def is_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelled

    def cancel(self, job_id: str) -> bool:
        """Interrupt the job's thread if it runs here; True if it did.

        The exception lands at the thread's next Python bytecode: a task blocked in one long C call (a single
        ``time.sleep(60)``) sees it when that call returns, as with Dramatiq's time limits.
        """
        with self._lock:
            thread_id = self._threads.get(job_id)
            if thread_id is None:
                return False
            self._cancelled.add(job_id)
            raise_thread_exception(thread_id, JobCancelled)  # type: ignore[no-untyped-call]
        logger.info("interrupted job %s on thread %s", job_id, thread_id)
        return True
