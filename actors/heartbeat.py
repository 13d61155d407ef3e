"""A worker process's heartbeat: it renews the leases of the jobs it runs, so the scheduler can tell a live
worker's long job from a dead worker's orphan (whose lease expires and which is then re-queued)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Calls ``beat`` every ``interval_s`` until stopped; a failing beat is logged and retried next time."""

    def __init__(self, beat: Callable[[], None], interval_s: float) -> None:
        super().__init__(name="engineroom-heartbeat", daemon=True)
        self.beat = beat
        self.interval_s = interval_s
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # a loop boundary: a missed beat must not end the heartbeat
                logger.exception("heartbeat failed; leases may expire if this persists")

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
