"""Local stand-ins for ``engineroom dev``: an embedded SecantusDB process and a RabbitMQ reachability probe.

SecantusDB is GPL-2.0, so it is only ever started as a separate process (``secantusd-py``), never imported.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pika
import pika.exceptions

logger = logging.getLogger(__name__)

#: Seconds to wait for the embedded database to accept connections.
DATABASE_START_TIMEOUT_S = 30.0
#: WiredTiger's cache for the embedded server (``--cache-size``; SecantusDB's default is 1G). The server hung for
#: good twice in ~16 full test runs, both times during a 200 MB GridFS artifact: a thread holding SecantusDB's storage
#: lock waited in WiredTiger for eviction (``py-spy dump --native``: ``__wt_cache_eviction_worker`` under
#: ``Storage._coll_options``) while the other threads, whose sessions may pin the pages to evict, waited on that
#: lock. WiredTiger makes a thread help evict once dirty pages pass 20 % of the cache (``eviction_dirty_trigger``):
#: 200 MB of 1G. Twice the cache keeps such an artifact under it. WiredTiger takes memory for its cache as pages are
#: read or written, not up front.
CACHE_SIZE = "2G"
#: Seconds a stopping server has to exit before it is killed.
STOP_TIMEOUT_S = 10.0
#: Seconds between two SIGTERMs to a server continued from a freeze (see ``EmbeddedDatabase._terminate``).
RESEND_TERM_S = 0.5


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Raises:
      TimeoutError: nothing did within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


class EmbeddedDatabase:
    """A ``secantusd-py`` child process with its data under ``storage_path``."""

    def __init__(self, storage_path: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.storage_path = storage_path.resolve()
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen = False
        #: How the last server stopped: 0 for a clean exit, minus the signal that ended it otherwise.
        self.exit_code: int | None = None

    @property
    def url(self) -> str:
        # retryWrites=false: SecantusDB slows to ~150 writes/s with retryable writes (DESIGN.md pitfalls).
        return f"mongodb://{self.host}:{self.port}/?retryWrites=false&directConnection=true"

    def start(self) -> EmbeddedDatabase:
        """Start the server and wait until it accepts connections.

        Raises:
          RuntimeError: ``secantusd-py`` is not installed (``pip install -e .[dev]``) or did not start.
        """
        executable = shutil.which("secantusd-py")
        if executable is None:
            raise RuntimeError(
                "secantusd-py not found: install the dev extra (pip install -e '.[dev]') or set ENGINEROOM_MONGODB_URL"
            )
        self.storage_path.mkdir(parents=True, exist_ok=True)
        log_path = self.storage_path.parent / "secantusd.log"
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self._process = subprocess.Popen(
                [
                    executable,
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--storage-path",
                    str(self.storage_path),
                    "--log-level",
                    "WARNING",
                    "--cache-size",
                    CACHE_SIZE,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.host, self.port, DATABASE_START_TIMEOUT_S)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"SecantusDB did not start; see {log_path}") from exc
        return self

    def kill(self) -> None:
        """SIGKILL the server, as a crash or the OOM killer would: no clean shutdown (fault tests)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._process is not None:
            self.exit_code = self._process.returncode
        self._process = None

    def freeze(self) -> None:
        """SIGSTOP the server: its connections stay open and nothing answers, as with a hung host or a network
        partition, where a driver waits on its sockets instead of being refused (fault tests); ``thaw`` resumes it."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)
            self._frozen = True

    def thaw(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
            self._frozen = False

    def stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._terminate(self._process, frozen=self._frozen)
            self.exit_code = self._process.returncode
        self._process = None
        self._frozen = False

    def _terminate(self, process: subprocess.Popen[bytes], *, frozen: bool) -> None:
        """SIGTERM, and SIGKILL after ``STOP_TIMEOUT_S``. A frozen server is continued first, and its SIGTERM is
        sent again after ``RESEND_TERM_S``: the one that follows its SIGCONT at once is lost (it ran on until the
        SIGKILL, every time). Only once: each SIGTERM starts SecantusDB's stop over, which takes 2 s."""
        if frozen:
            process.send_signal(signal.SIGCONT)
        waits_s = (RESEND_TERM_S, STOP_TIMEOUT_S - RESEND_TERM_S) if frozen else (STOP_TIMEOUT_S,)
        for wait_s in waits_s:
            process.terminate()
            try:
                process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue
        process.kill()
        process.wait()


def is_rabbitmq_reachable(amqp_url: str, timeout_s: float = 2.0) -> bool:
    parameters = pika.URLParameters(amqp_url)
    parameters.socket_timeout = timeout_s
    parameters.connection_attempts = 1
    try:
        pika.BlockingConnection(parameters).close()
    except (pika.exceptions.AMQPError, OSError):
        return False
    return True
