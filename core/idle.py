"""``IdleConnections``: replace a thread's pika connection that sat idle too long, before using it.

pika's ``BlockingConnection`` answers heartbeats only while it is being called, so RabbitMQ gives up on one left
idle for about a minute (two heartbeat intervals by default). The next publish on it fails; Dramatiq's
``enqueue`` and ``RabbitEventBus.publish`` both reconnect and retry, but pika first logs the reset as three
ERROR lines with tracebacks — hundreds in a 30-minute soak of a healthy system, where operators alert on ERROR.
Closing the connection while RabbitMQ still holds it open, and opening a new one, costs a few milliseconds once
per idle spell and logs nothing.
"""

from __future__ import annotations

import logging
import threading
import time

#: Seconds a thread's publishing connection may sit unused and still be used; well under RabbitMQ's ~60 s.
IDLE_CONNECTION_S = 30.0


class IdleConnections:
    """When each thread last published on its own connection (pika connections are per thread)."""

    def __init__(self, idle_s: float = IDLE_CONNECTION_S) -> None:
        self.idle_s = idle_s
        self._local = threading.local()

    def stale(self) -> bool:
        """Whether this thread's connection was unused for longer than ``idle_s``; it counts as used from now."""
        now = time.monotonic()
        last: float | None = getattr(self._local, "used_at", None)
        self._local.used_at = now
        return last is not None and now - last > self.idle_s


#: What pika logs, as ERROR, when a connection RabbitMQ already dropped is closed.
_RESET_MARKERS = ("Connection reset by peer", "called on closed connection")
_PIKA_LOGGERS = (
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.base_connection",
    "pika.adapters.blocking_connection",
)


class _DeadConnectionClosed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(marker in message for marker in _RESET_MARKERS)


def quiet_dead_connections_at_shutdown() -> None:
    """From now on, drop pika's ERRORs about closing connections RabbitMQ already dropped.

    At shutdown Dramatiq closes every thread's connection, and those of threads that sat idle past the heartbeat
    timeout (nothing replaced them: they never published again) are long dead. Dramatiq filters the same kind of
    line ("Broken pipe") in ``RabbitmqBroker.close``; this covers the reset. Call it only once the process stops.
    """
    for name in _PIKA_LOGGERS:
        pika_logger = logging.getLogger(name)
        if not any(isinstance(existing, _DeadConnectionClosed) for existing in pika_logger.filters):
            pika_logger.addFilter(_DeadConnectionClosed())
