"""Progress coalescing: every report becomes an event, but a job's document is written at most
``1 / MIN_WRITE_INTERVAL_S`` times a second, and not in a job's first interval; the last report is never lost
(the job's final write carries it)."""

from __future__ import annotations

import threading
import time

from engineroom.models.job import Progress

#: Seconds between two progress writes of one job (~10 writes/s).
MIN_WRITE_INTERVAL_S = 0.1


class ProgressCoalescer:
    def __init__(self, min_interval_s: float = MIN_WRITE_INTERVAL_S) -> None:
        self.min_interval_s = min_interval_s
        self._last_write: dict[str, float] = {}
        self._latest: dict[str, Progress] = {}
        self._lock = threading.Lock()

    def start(self, job_id: str) -> None:
        """The job starts now: its first write waits one interval (a job done by then needs none)."""
        with self._lock:
            self._last_write[job_id] = time.monotonic()

    def offer(self, job_id: str, progress: Progress) -> bool:
        """Remember the report; True if it should be written now."""
        now = time.monotonic()
        with self._lock:
            self._latest[job_id] = progress
            if now - self._last_write.get(job_id, float("-inf")) < self.min_interval_s:
                return False
            self._last_write[job_id] = now
            return True

    def pop_latest(self, job_id: str) -> Progress | None:
        """The last report of a job that is finishing (and forget the job)."""
        with self._lock:
            self._last_write.pop(job_id, None)
            return self._latest.pop(job_id, None)
