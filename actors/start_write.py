"""``DeferredStart``: the write that marks a job ``running``, put off for a moment so that a short job needs one
write for its start and its outcome together.

Every write to a job document maintains each of the ``jobs`` indexes (SecantusDB rewrites all of them; MongoDB
those whose keys change, and ``state`` is in most), so a job of a few milliseconds paid as much for its claim as
for its outcome. A job still running after ``START_WRITE_DELAY_S`` gets its own start write, as before, so the
document says ``running`` while it matters (dashboards, lease sweeps, the outbox grace). Until then the engine
slot, which admits one holder per job id, is what keeps a duplicate message of the job from running it too.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable

from engineroom.core.errors import EngineroomError

logger = logging.getLogger(__name__)

#: Seconds a job runs before its start is written on its own.
START_WRITE_DELAY_S = 0.1


class StartWrite(enum.Enum):
    #: Not written: the outcome write must also record the start.
    PENDING = "pending"
    #: Written: the job is ``running`` in MongoDB.
    WRITTEN = "written"
    #: Refused: the job left ``queued`` first (it was cancelled); its outcome must not be written.
    REFUSED = "refused"


class DeferredStart:
    """Calls ``write`` (True if the job was still ``queued`` and is now ``running``) after ``delay_s``, unless the
    job's outcome is ready first: ``settle()`` then cancels it."""

    def __init__(self, write: Callable[[], bool], delay_s: float = START_WRITE_DELAY_S) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._state = StartWrite.PENDING
        self._settled = False
        # One short-lived thread per job longer than nothing: Timer threads cost ~0.1 ms to start, a database
        # write several times that.
        self._timer = threading.Timer(delay_s, self._fire)
        self._timer.daemon = True

    def begin(self) -> None:
        self._timer.start()

    def write_now(self) -> StartWrite:
        """Write the start at once instead (a redelivered message: the last worker to hold it died, maybe during
        the job's first moments, unrecorded — so this attempt is counted before it runs, and a job that kills its
        worker every time still runs out of attempts)."""
        self._fire()
        return self.settle()

    def _fire(self) -> None:
        with self._lock:  # held across the write, so ``settle`` waits for its answer
            if self._settled:
                return
            try:
                written = self._write()
            except EngineroomError:
                logger.warning("the start of a job could not be written; its outcome write will record it")
                return
            self._state = StartWrite.WRITTEN if written else StartWrite.REFUSED

    def settle(self) -> StartWrite:
        """Stop the timer (a write under way is waited for) and say what became of the start write."""
        self._timer.cancel()
        with self._lock:
            self._settled = True
            return self._state
