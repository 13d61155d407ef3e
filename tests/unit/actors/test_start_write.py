"""DeferredStart: the start write happens after the delay, or not at all if the outcome is ready first."""

from __future__ import annotations

import time

from engineroom.actors.start_write import DeferredStart, StartWrite
from engineroom.core.errors import StoreUnavailable

DELAY_S = 0.05


class Writes:
    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_settled_before_the_delay_it_never_writes() -> None:
    writes = Writes(True)
    start = DeferredStart(writes, DELAY_S)
    start.begin()
    assert start.settle() is StartWrite.PENDING
    time.sleep(DELAY_S * 3)
    assert writes.calls == 0


def test_after_the_delay_it_has_written_once() -> None:
    writes = Writes(True)
    start = DeferredStart(writes, DELAY_S)
    start.begin()
    time.sleep(DELAY_S * 3)
    assert start.settle() is StartWrite.WRITTEN
    assert writes.calls == 1


def test_a_refused_write_means_the_job_moved_on() -> None:
    start = DeferredStart(Writes(False), DELAY_S)
    start.begin()
    time.sleep(DELAY_S * 3)
    assert start.settle() is StartWrite.REFUSED


def test_a_failed_write_leaves_the_start_to_the_outcome_write() -> None:
    writes = Writes(StoreUnavailable())
    start = DeferredStart(writes, DELAY_S)
    start.begin()
    time.sleep(DELAY_S * 3)
    assert writes.calls == 1
    assert start.settle() is StartWrite.PENDING


def test_written_now_it_needs_no_timer_and_never_writes_twice() -> None:
    writes = Writes(True)
    start = DeferredStart(writes, DELAY_S)
    assert start.write_now() is StartWrite.WRITTEN
    time.sleep(DELAY_S * 3)
    assert start.settle() is StartWrite.WRITTEN and writes.calls == 1
