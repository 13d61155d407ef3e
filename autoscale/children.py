"""The worker processes one supervisor runs: each an ``engineroom worker --processes 1`` command of its own.

A child is a whole Dramatiq CLI (``dramatiq/cli.py`` ``main``), so stopping one is Dramatiq's own graceful stop:
SIGTERM to it makes its worker process stop consuming, finish its running jobs within ``--grace-s`` and requeue
what it prefetched. That is the only way a child is ever stopped here; nothing sends SIGKILL. Each starts in a
process group of its own, so a terminal's Ctrl-C reaches the supervisor alone, which forwards one SIGTERM to each
child: a second signal from the group could cut a drain short.

A supervisor that dies without a word (SIGKILL, the OOM killer) cannot forward anything: each child asks Linux to
send it SIGTERM when its supervisor dies (``follow_supervisor``), so it drains and exits instead of running on
unsupervised next to the supervisor's replacement.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Set in each child's environment: the pid of the supervisor it belongs to.
SUPERVISOR_PID_ENV = "ENGINEROOM_SUPERVISOR_PID"
#: ``prctl`` option: the signal this process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerCommand:
    """The ``engineroom worker`` options every child runs with."""

    engines: list[str]
    threads: int
    grace_s: float
    notifications: bool
    #: The first child serves its metrics here, the next one on the port after, ...; 0: none serve any.
    metrics_port: int

    def argv(self) -> list[str]:
        notifications = "--notifications" if self.notifications else "--no-notifications"
        options = ["--engines", ",".join(self.engines), "--threads", str(self.threads), "--grace-s", str(self.grace_s)]
        return [sys.executable, "-m", "engineroom.cli", "worker", "--processes", "1", *options, notifications]

    def environment(self, slot: int) -> dict[str, str]:
        """The supervisor's environment, with the metrics port of ``slot``: each child is a Dramatiq CLI with an
        exposition server of its own (``actors/worker_metrics.py``), so each needs a port."""
        port = self.metrics_port + slot if self.metrics_port else 0
        return {**os.environ, "ENGINEROOM_WORKER_METRICS_PORT": str(port), SUPERVISOR_PID_ENV: str(os.getpid())}


def follow_supervisor() -> None:
    """In a child: get SIGTERM (a graceful drain) when the supervisor that started it dies, however it dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere, or outside a supervisor, nothing happens. The signal
    follows the death of the thread that started the child: the supervisor starts children from its main thread.
    """
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("could not ask to follow supervisor %s: errno %d", supervisor, ctypes.get_errno())
        return
    if os.getppid() != int(supervisor):  # it died before the request above was made
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Child:
    popen: subprocess.Popen[bytes]
    slot: int
    draining: bool = False


class WorkerProcesses:
    """Starts children, drains the newest first, and notices the ones that exited."""

    def __init__(self, command: WorkerCommand) -> None:
        self.command = command
        self._children: list[_Child] = []

    @property
    def active(self) -> int:
        """Children taking jobs (started and not told to stop)."""
        return sum(not child.draining for child in self._children)

    @property
    def draining(self) -> int:
        """Children told to stop that have not exited yet (still finishing jobs)."""
        return sum(child.draining for child in self._children)

    def start(self) -> int:
        """Start one child on the lowest free metrics slot; returns its pid."""
        taken = {child.slot for child in self._children}
        slot = next(n for n in range(len(taken) + 1) if n not in taken)
        popen = subprocess.Popen(self.command.argv(), env=self.command.environment(slot), start_new_session=True)
        self._children.append(_Child(popen, slot))
        return popen.pid

    def drain_newest(self) -> int | None:
        """SIGTERM the newest child still taking jobs (the oldest keeps its warm caches); returns its pid."""
        for child in reversed(self._children):
            if not child.draining:
                child.draining = True
                child.popen.send_signal(signal.SIGTERM)
                return child.popen.pid
        return None

    def reap(self) -> list[tuple[int, int, bool]]:
        """Forget the children that exited: ``(pid, exit code, whether it was draining)`` for each."""
        exited = [child for child in self._children if child.popen.poll() is not None]
        for child in exited:
            self._children.remove(child)
        return [(child.popen.pid, child.popen.returncode, child.draining) for child in exited]

    def forward(self, signum: signal.Signals) -> None:
        """Send ``signum`` to every child once; SIGTERM also marks them draining."""
        for child in self._children:
            if signum == signal.SIGTERM:
                if child.draining:
                    continue  # already told: a second SIGTERM is still graceful, but needless
                child.draining = True
            if child.popen.poll() is None:
                child.popen.send_signal(signum)

    @property
    def alive(self) -> bool:
        return any(child.popen.poll() is None for child in self._children)

    def running_pids(self) -> list[int]:
        """The pids of the children that have not exited."""
        return [child.popen.pid for child in self._children if child.popen.poll() is None]
