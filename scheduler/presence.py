"""The scheduler's heartbeat document in ``workers``, so ``GET /workers`` shows schedulers and which one leads."""

from __future__ import annotations

import os
import socket
import time

from engineroom.core.clock import utcnow
from engineroom.models.worker import ProcessKind, WorkerPublic
from engineroom.store.workers import WorkerStore


class SchedulerPresence:
    """Upserts the scheduler's document at most every ``interval_s`` (the loop ticks far more often)."""

    def __init__(self, identity: str, workers: WorkerStore, *, interval_s: float) -> None:
        self.identity = identity
        self.workers = workers
        self.interval_s = interval_s
        self.started_at = utcnow()
        self._last_beat = float("-inf")
        self._was_leader: bool | None = None

    async def beat_if_due(self, *, leader: bool) -> None:
        """Report now if the interval passed or leadership changed (so the list never shows a stale leader long).

        Raises:
          StoreUnavailable: MongoDB did not answer.
        """
        now = time.monotonic()
        if now - self._last_beat < self.interval_s and leader == self._was_leader:
            return
        await self.workers.beat(
            WorkerPublic(
                id=self.identity,
                kind=ProcessKind.SCHEDULER,
                host=socket.gethostname(),
                pid=os.getpid(),
                leader=leader,
                started_at=self.started_at,
                last_heartbeat=utcnow(),
            )
        )
        self._last_beat, self._was_leader = now, leader

    async def forget(self) -> None:
        """Delete the document on a clean stop.

        Raises:
          StoreUnavailable: MongoDB did not answer (the document then lapses by itself).
        """
        await self.workers.remove(self.identity)
