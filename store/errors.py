"""The one place where driver errors become ``StoreUnavailable``, and where a transient one is tried again.

Every store method that talks to MongoDB carries one of two decorators, which say whether it may be sent again:

* ``safe_to_repeat``: a transient failure (a dropped connection, a primary stepping down, an error MongoDB labels
  retryable) is tried again, at most ``len(RETRY_PAUSES_S)`` more times, all of them (pauses, the driver's waits)
  within ``RETRY_BUDGET_S``; then it leaves as ``StoreUnavailable`` like any other driver error.
* ``run_once``: any driver error leaves as ``StoreUnavailable`` at once.

What may be repeated: the first try may have been applied with only its reply lost, so a repeat must neither write
twice nor change the answer. So

* reads; writes whose second application changes nothing: a ``$set`` or ``$pull`` of given values, the upsert of a
  fixed document, a delete by id;
* conditional moves (a job's state transition, a parking): their condition stops matching once applied, so a repeat
  never writes twice. Where only the reply of an applied first try was lost, the repeat reports "no longer matched",
  which its callers already read as having lost a race (the outcome is not theirs to announce), as they would have
  read the ``StoreUnavailable`` of a single try;
* inserts with client-side ids only where the method reads a duplicate key as "stored already": the id is random and
  new, so a duplicate on it can only be this very insert's earlier try (the events log; a job, whose insert tells its
  own id from an idempotency key's earlier job).

Run once: an ``$inc`` or an unconditional ``$push`` (a repeat would count twice), and inserts whose duplicate key means
something else (a notification a redelivered event finds stored: that one is not announced again).

pymongo itself retries a read once (``retryReads``); this retry comes on top, for the failures that outlast it. It
would retry a single-document write once too, exactly once (the server recognises the repeat), but the deployments'
URLs turn that off (``retryWrites=false``: SecantusDB slows to a crawl with it), so for writes this is the only retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pymongo
from pymongo.errors import ConnectionFailure, PyMongoError, ServerSelectionTimeoutError

from engineroom.core.errors import StoreUnavailable

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Pauses before the second and third tries of an operation that is safe to repeat.
RETRY_PAUSES_S = (0.05, 0.15)
#: What the retries of one call may take in all, pauses included: a caller waits at most this much longer than the
#: first try took. After a dropped connection pymongo checks the server again before a new try, at most every 0.5 s
#: (``minHeartbeatFrequencyMS``): one such retry fits, a dead server does not hold the caller.
RETRY_BUDGET_S = 0.8
#: The error labels MongoDB puts on failures that a repeat may well not meet.
TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")


def is_transient(error: PyMongoError) -> bool:
    """Whether the failure may be gone a moment later: a lost or refused connection, a network timeout, or a failure
    MongoDB labels retryable. Not a server that could not be found for the whole selection timeout: a repeat would
    wait as long again."""
    if isinstance(error, ServerSelectionTimeoutError):
        return False
    return isinstance(error, ConnectionFailure) or any(error.has_error_label(label) for label in TRANSIENT_LABELS)


async def _call(operation: Callable[[], Awaitable[T]], *, repeat: bool, name: str) -> T:
    try:
        return await operation()
    except PyMongoError as exc:
        failure = exc
    if repeat and is_transient(failure):
        deadline = time.monotonic() + RETRY_BUDGET_S
        for pause_s in RETRY_PAUSES_S:
            logger.warning("%s failed (%s: %s); trying again", name, type(failure).__name__, failure)
            await asyncio.sleep(pause_s)
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            try:
                with bounded(remaining_s):  # the driver's own waits too (server selection, sockets)
                    return await operation()
            except PyMongoError as exc:
                failure = exc
            if not is_transient(failure):
                break
    raise StoreUnavailable() from failure


def bounded(seconds: float) -> contextlib.AbstractContextManager[None]:
    """Database calls started inside the block give up once ``seconds`` have passed since it began, all together
    (server selection, socket reads, retries: pymongo's client-side operation timeout), and fail with
    ``StoreUnavailable`` as any driver error does; once the time is up, they fail at once. A bound inside another
    ends with the outer one at the latest.

    For a process that is stopping (a MongoDB that does not answer must not hold it), and for the retries above.
    Motor copies the caller's context to the thread it runs each call on, so the bound reaches the driver; tasks
    started inside inherit it.
    """
    if seconds <= 0:
        raise ValueError("a bound must be positive (pymongo reads 0 as no timeout)")
    return _Bounded(seconds)


class _Bounded(contextlib.AbstractContextManager[None]):
    """``pymongo.timeout``, tolerating an exit in another context: a coroutine abandoned inside the block when a
    stopping process's loop closes is closed by the garbage collector, where resetting pymongo's context variables
    raises ``ValueError`` ("created in a different Context") — there is nothing of that context left to reset."""

    def __init__(self, seconds: float) -> None:
        self._timeout = pymongo.timeout(seconds)

    def __enter__(self) -> None:
        self._timeout.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        with contextlib.suppress(ValueError):
            self._timeout.__exit__(*exc_info)


def _decorator(*, repeat: bool) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
    def decorate(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(method)
        async def translated(*args: P.args, **kwargs: P.kwargs) -> T:
            name = getattr(method, "__qualname__", repr(method))
            return await _call(lambda: method(*args, **kwargs), repeat=repeat, name=name)

        return translated

    return decorate


#: For reads and writes that may be sent twice (see the module's docstring): transient failures are tried again.
safe_to_repeat = _decorator(repeat=True)
#: For writes that must not be sent twice: any driver error leaves as ``StoreUnavailable`` at once.
run_once = _decorator(repeat=False)
