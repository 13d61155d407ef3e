"""Ending a process on time: once asked to stop, every engineroom process exits within its grace period plus
``EXIT_MARGIN_S``, whatever MongoDB and RabbitMQ do, and logs what it abandoned.

The waits of a stop are bounded where they happen: its database calls share one ``SHUTDOWN_DB_BUDGET_S``
(``store/client.py`` ``bounded``), and a worker's threads stop waiting on MongoDB (``actors/loop_stores.py``). One
wait cannot be bounded from here: motor runs each call on a non-daemon thread, and a call already sent to a server
that stopped answering (a hung host, a partition) waits on a socket that has no timeout, until pymongo's monitor
gives up on the server about 30 s later, or for good once the client is closed (measured: still waiting after
60 s). The interpreter joins those threads before it exits (``threading._shutdown``), which is where issue 16's
worker hung. So each process arms an ``ExitDeadline`` when its stop begins: if it is still alive then, it logs
what it leaves behind and ends with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

#: Seconds past its grace period a stopping process may take to wind down (its bounded database calls, closing
#: its clients) before its ``ExitDeadline`` ends it.
EXIT_MARGIN_S = 5.0
#: Seconds all the database calls of one stop may take together (removing a heartbeat document, releasing a
#: lease, clearing outbox flags): a MongoDB that does not answer within them will not answer in time anyway.
SHUTDOWN_DB_BUDGET_S = 1.0
#: Seconds a process that has finished stopping gives threads still inside a database or broker call, before it
#: exits without them: nothing waits for their answers any more.
LINGER_S = 1.0
#: Exit code of a process its deadline ended before it finished stopping (Dramatiq's, for "Killing worker process").
CUT_SHORT_EXIT_CODE = 1
#: Set by ``engineroom worker`` for its Dramatiq worker processes: their grace, which Dramatiq keeps to itself.
WORKER_GRACE_ENV = "ENGINEROOM_WORKER_GRACE_S"
#: A worker process's grace without ``WORKER_GRACE_ENV`` (started as ``dramatiq engineroom.actors.worker``):
#: Dramatiq's default ``--worker-shutdown-timeout``.
DEFAULT_WORKER_GRACE_S = 600.0


@contextlib.contextmanager
def worker_grace_environment(grace_s: float) -> Iterator[None]:
    """Tell the Dramatiq worker processes started inside the block their grace; put back afterwards, as
    ``worker_metrics_environment`` does, for commands run in process (tests)."""
    before = os.environ.get(WORKER_GRACE_ENV)
    os.environ[WORKER_GRACE_ENV] = str(grace_s)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(WORKER_GRACE_ENV, None)
        else:
            os.environ[WORKER_GRACE_ENV] = before


def worker_grace_s() -> float:
    """This worker process's grace, as ``engineroom worker --grace-s`` set it."""
    return float(os.environ.get(WORKER_GRACE_ENV, DEFAULT_WORKER_GRACE_S))


class ExitDeadline:
    """Ends this process with ``os._exit`` if it is still alive at a deadline, after logging what it abandons.

    A daemon thread waits for the deadline, so it fires wherever the process is stuck, the interpreter's final join
    of non-daemon threads included.
    """

    def __init__(self, describe: Callable[[], list[str]] | None = None) -> None:
        #: Names what would be abandoned (jobs, child processes); threads still running are always listed.
        self.describe = describe
        self._condition = threading.Condition()
        self._started_at: float | None = None
        self._deadline: float | None = None
        self._why = ""
        self._exit_code = CUT_SHORT_EXIT_CODE
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, why: str, *, exit_code: int = CUT_SHORT_EXIT_CODE) -> None:
        """Exit with ``exit_code`` unless the process is gone ``seconds`` from now, or by the deadline already set if
        that comes first (the latest ``exit_code`` applies: it says how the stop ended)."""
        with self._condition:
            now = time.monotonic()
            if self._started_at is None:
                self._started_at = now
            if self._deadline is None or now + seconds < self._deadline:
                self._deadline, self._why = now + seconds, why
            self._exit_code = exit_code
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="engineroom-exit-deadline", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def finish(self, exit_code: int) -> int:
        """The stop is done: give threads still inside a call ``LINGER_S`` to end, then exit with ``exit_code``
        without them. Returns ``exit_code``, for the caller to exit with as usual."""
        self.arm(LINGER_S, f"stopped; threads still inside a call got {LINGER_S:g} s", exit_code=exit_code)
        return exit_code

    def _watch(self) -> None:
        with self._condition:
            while self._deadline is None or time.monotonic() < self._deadline:
                self._condition.wait(None if self._deadline is None else self._deadline - time.monotonic())
            started_at, why, exit_code = self._started_at or 0.0, self._why, self._exit_code
        abandoned = [*(self.describe() if self.describe is not None else []), *_running_threads()]
        # The log may already be closed (a Dramatiq worker process closes its pipe to the parent last): say it if
        # possible, and exit either way.
        logging.raiseExceptions = False
        for item in abandoned:
            logger.warning("abandoned %s", item)
        logger.warning("exiting now, %.1f s after the stop began (%s)", time.monotonic() - started_at, why)
        _flush_logs()
        os._exit(exit_code)


def _running_threads() -> list[str]:
    """The non-daemon threads still alive, which the interpreter would wait for."""
    names = [
        thread.name
        for thread in threading.enumerate()
        if thread.is_alive() and not thread.daemon and thread is not threading.main_thread()
    ]
    return [f"{len(names)} thread(s) still running ({', '.join(names)})"] if names else []


def _flush_logs() -> None:
    for flush in [*(handler.flush for handler in logging.getLogger().handlers), sys.stdout.flush, sys.stderr.flush]:
        with contextlib.suppress(OSError, ValueError):  # closed already: nothing more can be said there
            flush()
