"""LoopStores once the worker stops: waits on a MongoDB that does not answer give up together, at one deadline."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread

from engineroom.actors.loop_stores import LoopStores
from engineroom.core.config import Settings
from engineroom.core.errors import StoreUnavailable


class NeverAnswers:
    """Stores whose every call waits for good, as calls to a frozen MongoDB do."""

    async def wait_forever(self) -> None:
        await asyncio.Event().wait()

    async def answer(self) -> str:
        return "answer"


@pytest.fixture
def loop_thread() -> Iterator[EventLoopThread]:
    """The event loop thread Dramatiq's ``AsyncIO`` middleware runs in a worker."""
    thread = EventLoopThread(logging.getLogger("test"))
    thread.start(timeout=1.0)
    set_event_loop_thread(thread)
    yield thread
    set_event_loop_thread(None)
    thread.stop()  # type: ignore[no-untyped-call]  # dramatiq leaves EventLoopThread.stop unannotated


@pytest.fixture
def stores(settings: Settings, loop_thread: EventLoopThread) -> LoopStores[NeverAnswers]:
    # The client is built lazily and never used: the stores below never touch it.
    return LoopStores(settings, lambda db: NeverAnswers())


def test_while_the_worker_runs_a_call_gets_its_answer(stores: LoopStores[NeverAnswers]) -> None:
    assert stores.call(lambda never: never.answer()) == "answer"


class Waiting:
    """A call to a MongoDB that never answers, made from a thread of its own (a heartbeat, a job)."""

    def __init__(self, stores: LoopStores[NeverAnswers]) -> None:
        self.outcome: list[BaseException] = []
        self.thread = threading.Thread(target=self._call, args=(stores,), daemon=True)
        self.thread.start()
        time.sleep(0.2)  # under way

    def _call(self, stores: LoopStores[NeverAnswers]) -> None:
        try:
            stores.call(lambda never: never.wait_forever())
        except BaseException as exc:  # noqa: BLE001 (the test reads what ended the wait)
            self.outcome.append(exc)

    def ended_with(self, timeout_s: float = 5.0) -> list[type[BaseException]]:
        self.thread.join(timeout_s)
        return [type(exc) for exc in self.outcome]


def test_once_the_worker_stops_calls_already_waiting_give_up_at_the_deadline(stores: LoopStores[NeverAnswers]) -> None:
    # Given a thread waiting on a call that never answers
    waiting = Waiting(stores)
    # When the worker stops waiting after 0.3 s
    started = time.monotonic()
    stores.stop_waiting_after(0.3)
    # Then the call gave up then, as with MongoDB unreachable
    assert waiting.ended_with() == [StoreUnavailable]
    assert 0.25 <= time.monotonic() - started < 1.0


def test_once_a_call_gave_up_the_next_ones_fail_at_once(stores: LoopStores[NeverAnswers]) -> None:
    stores.stop_waiting_after(0.2)
    with pytest.raises(StoreUnavailable):
        stores.call(lambda never: never.wait_forever())
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        stores.call(lambda never: never.answer())  # MongoDB did not answer: no use asking again
    assert time.monotonic() - started < 0.1


def test_closing_cancels_the_calls_under_way_and_takes_no_longer_than_the_budget(
    stores: LoopStores[NeverAnswers],
) -> None:
    waiting = Waiting(stores)
    started = time.monotonic()
    stores.close()
    assert waiting.ended_with(timeout_s=1.0) == [StoreUnavailable]
    assert time.monotonic() - started < 1.0
