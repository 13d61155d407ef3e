"""MongoDB for Dramatiq actors: a motor client and stores built lazily on the loop thread of Dramatiq's ``AsyncIO``
middleware, so store/ stays one async module for the gateway and the workers alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from dramatiq import Broker, Middleware, Worker
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread
from dramatiq.middleware import AsyncIO
from motor.motor_asyncio import AsyncIOMotorClient

from engineroom.core.config import Settings
from engineroom.store.client import Database, connect

S = TypeVar("S")
T = TypeVar("T")

logger = logging.getLogger(__name__)


def private_loop_thread(name: str) -> EventLoopThread:
    """An event loop thread of one's own (started), for database work that must not queue behind the worker
    threads' calls on the ``AsyncIO`` middleware's shared loop: a daemon, so it never holds up the process's exit."""
    thread = EventLoopThread(logger)
    thread.name, thread.daemon = name, True
    thread.start(timeout=5)
    return thread


class LoopStores(Generic[S]):
    """Runs store operations from worker threads on the ``AsyncIO`` loop; ``build`` makes the stores from the
    database there, on first use, because motor binds to the loop it is first used on.

    ``loop_thread`` runs them on a loop of their own instead (``private_loop_thread``), with a client of their own.
    """

    def __init__(
        self, settings: Settings, build: Callable[[Database], S], loop_thread: EventLoopThread | None = None
    ) -> None:
        self.settings = settings
        self._build = build
        self._loop_thread = loop_thread
        self._client: AsyncIOMotorClient[dict[str, Any]] | None = None
        self._stores: S | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result.

        Raises:
          RuntimeError: the broker has no ``AsyncIO`` middleware (build it with ``core.broker``).
        """
        loop_thread = self._loop_thread or get_event_loop_thread()
        if loop_thread is None:
            coroutine.close()
            raise RuntimeError("the AsyncIO middleware is not running; build the broker with core.broker")
        return loop_thread.run_coroutine(coroutine)

    def call(self, operation: Callable[[S], Awaitable[T]]) -> T:
        """Apply ``operation`` to the stores on the loop and wait for its result."""
        return self.run(self._apply(operation))

    async def _apply(self, operation: Callable[[S], Awaitable[T]]) -> T:
        if self._stores is None:
            self._client = connect(self.settings)
            self._stores = self._build(self._client[self.settings.mongodb_db])
        return await operation(self._stores)

    def submit(self, operation: Callable[[S], Awaitable[None]]) -> None:
        """Apply ``operation`` to the stores on the loop without waiting for it (operations submitted from one
        thread start in the order given); a failure is logged."""
        loop_thread = self._loop_thread or get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("the AsyncIO middleware is not running; build the broker with core.broker")
        future = asyncio.run_coroutine_threadsafe(self._apply(operation), loop_thread.loop)
        future.add_done_callback(_log_failure)

    def close(self) -> None:
        """Close the client; the loop must still run."""
        self.run(self._close())

    def close_and_stop(self) -> None:
        """Close the client, then stop the loop thread given to these stores (``private_loop_thread``)."""
        try:
            self.close()
        finally:
            if self._loop_thread is not None:
                self._loop_thread.stop()  # type: ignore[no-untyped-call]

    async def _close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client, self._stores = None, None


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("a database operation submitted without waiting failed", exc_info=future.exception())


class _WorkerLifecycle(Middleware):
    """Calls boot hooks once the worker booted, and shutdown hooks (in reverse) once its threads are done, before
    ``AsyncIO`` stops the loop ``LoopStores`` use.

    Added after ``AsyncIO``: Dramatiq runs ``after_*`` hooks in reverse order, so this one's shutdown runs first.
    One per broker, holding every hook (Dramatiq warns about two middleware of one class).
    """

    def __init__(self) -> None:
        self.boot_hooks: list[Callable[[], None]] = []
        self.shutdown_hooks: list[Callable[[], None]] = []

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        for hook in self.boot_hooks:
            hook()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        for hook in reversed(self.shutdown_hooks):
            hook()


def on_worker_lifecycle(
    broker: Broker, *, boot: Callable[[], None] | None = None, shutdown: Callable[[], None] | None = None
) -> None:
    """Run ``boot`` when the broker's worker has booted and ``shutdown`` when its threads are done (while the
    ``AsyncIO`` loop still runs)."""
    lifecycle = next((m for m in broker.middleware if isinstance(m, _WorkerLifecycle)), None)
    if lifecycle is None:
        lifecycle = _WorkerLifecycle()
        broker.add_middleware(lifecycle, after=AsyncIO)
    if boot is not None:
        lifecycle.boot_hooks.append(boot)
    if shutdown is not None:
        lifecycle.shutdown_hooks.append(shutdown)
