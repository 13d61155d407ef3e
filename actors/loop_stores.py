"""MongoDB for Dramatiq actors: a motor client and stores built lazily on the loop thread of Dramatiq's ``AsyncIO``
middleware, so store/ stays one async module for the gateway and the workers alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from dramatiq import Broker, Middleware, Worker
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread
from dramatiq.middleware import AsyncIO, Interrupt
from motor.motor_asyncio import AsyncIOMotorClient

from engineroom.core.config import Settings
from engineroom.core.errors import StoreUnavailable
from engineroom.core.shutdown import SHUTDOWN_DB_BUDGET_S
from engineroom.store.client import Database, bounded, connect

logger = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")

#: Seconds between two looks, while waiting for the loop's answer, at whether to give up (and for an ``Interrupt``:
#: a time limit or a cancel, raised into the waiting thread), as Dramatiq's ``EventLoopThread.run_coroutine`` does.
WAIT_SLICE_S = 0.1


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

    While the worker runs, a call waits for MongoDB as long as the driver does. Once it stops
    (``stop_waiting_after``), calls waiting or new give up together at one deadline, and once MongoDB failed to
    answer one of them, the rest fail at once: a stopping worker spends at most that long on a MongoDB that is gone.

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
        #: The operations under way, touched on the loop thread only.
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._give_up_at: float | None = None
        self._unreachable = False

    def stop_waiting_after(self, seconds: float) -> None:
        """From now on, calls waiting or new give up ``seconds`` from now (or at an earlier deadline already set)."""
        give_up_at = time.monotonic() + seconds
        if self._give_up_at is None or give_up_at < self._give_up_at:
            self._give_up_at = give_up_at

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result.

        Raises:
          RuntimeError: no ``AsyncIO`` loop runs: the worker stopped, or the broker lacks the middleware (build it
            with ``messaging.broker``).
          StoreUnavailable: the worker is stopping, and the deadline passed or MongoDB already failed to answer.
        """
        loop_thread = self._loop_thread or get_event_loop_thread()
        if loop_thread is None or not loop_thread.loop.is_running():
            coroutine.close()
            raise RuntimeError(
                "no AsyncIO loop runs (the worker stopped, or the broker was not built by messaging.broker)"
            )
        if self._has_given_up():
            coroutine.close()
            raise StoreUnavailable()
        loop = loop_thread.loop
        return self._wait(asyncio.run_coroutine_threadsafe(coroutine, loop), loop)

    def _wait(self, future: concurrent.futures.Future[T], loop: asyncio.AbstractEventLoop) -> T:
        try:
            while True:
                try:
                    return future.result(timeout=WAIT_SLICE_S)
                except concurrent.futures.TimeoutError:
                    if future.done():  # the coroutine itself raised TimeoutError
                        raise
                    if self._has_given_up() or not loop.is_running():
                        self._give_up()
                        if not loop.is_closed():
                            future.cancel()
                        raise StoreUnavailable() from None
        except concurrent.futures.CancelledError:  # by ``close``: the worker stops
            raise StoreUnavailable() from None
        except Interrupt:
            future.cancel()  # the thread is interrupted (time limit, cancel): the loop need not go on for it
            raise

    def _give_up(self) -> None:
        if not self._unreachable:
            logger.warning("abandoned the MongoDB calls still waiting: MongoDB did not answer while the worker stopped")
        self._unreachable = True

    def _has_given_up(self) -> bool:
        return self._unreachable or (self._give_up_at is not None and time.monotonic() >= self._give_up_at)

    def call(self, operation: Callable[[S], Awaitable[T]]) -> T:
        """Apply ``operation`` to the stores on the loop and wait for its result."""
        try:
            return self.run(self._apply(operation))
        except StoreUnavailable:
            if self._give_up_at is not None:
                self._give_up()  # stopping: no use asking again
            raise

    async def _apply(self, operation: Callable[[S], Awaitable[T]]) -> T:
        if self._stores is None:
            self._client = connect(self.settings)
            self._stores = self._build(self._client[self.settings.mongodb_db])
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            if self._give_up_at is None:
                return await operation(self._stores)
            with bounded(self._time_left_s()):  # the driver gives up too: none of its calls outlives the worker
                return await operation(self._stores)
        finally:
            self._in_flight.discard(task)

    def submit(self, operation: Callable[[S], Awaitable[None]]) -> None:
        """Apply ``operation`` to the stores on the loop without waiting for it (operations submitted from one
        thread start in the order given); a failure is logged."""
        loop_thread = self._loop_thread or get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("the AsyncIO middleware is not running; build the broker with messaging.broker")
        future = asyncio.run_coroutine_threadsafe(self._apply(operation), loop_thread.loop)
        future.add_done_callback(_log_failure)

    def close(self) -> None:
        """Cancel the operations still under way (their threads were abandoned: they get ``StoreUnavailable``) and
        close the client, within ``SHUTDOWN_DB_BUDGET_S``; the loop must still run. If MongoDB already failed to
        answer, the client is left to the process's exit: closing it sends a last command."""
        self.stop_waiting_after(SHUTDOWN_DB_BUDGET_S)
        if self._client is None:
            return
        loop_thread = self._loop_thread or get_event_loop_thread()
        if loop_thread is not None and loop_thread.loop.is_running():
            loop_thread.loop.call_soon_threadsafe(self._cancel_in_flight)
        try:
            self.run(self._close())
        except StoreUnavailable:  # given up already, or now
            logger.info("MongoDB did not answer while this worker stopped: its client is left to the exit")

    def close_and_stop(self) -> None:
        """Close the client, then stop the loop thread given to these stores (``private_loop_thread``)."""
        try:
            self.close()
        finally:
            if self._loop_thread is not None:
                self._loop_thread.stop()  # type: ignore[no-untyped-call]

    def _cancel_in_flight(self) -> None:
        for task in self._in_flight:
            task.cancel()

    async def _close(self) -> None:
        if self._client is not None:
            with bounded(self._time_left_s()):  # closing ends the client's sessions on the server: one more command
                self._client.close()
        self._client, self._stores = None, None

    def _time_left_s(self) -> float:
        """Seconds until the deadline; a tiny positive number once it passed (pymongo reads 0 as "no limit")."""
        assert self._give_up_at is not None
        return max(self._give_up_at - time.monotonic(), 0.001)


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
