"""A slot handed over to a waiting message is never left held by a process when the database fails mid-hand-over.

Seen in CI (``test_secantusdb_killed_and_restarted…``): a job ended while SecantusDB was down, its slot was offered to
the consumer waiting for one, that consumer's take failed, and the slot stayed in the process's ``HeldSlots`` —
renewed by every heartbeat and listed in its presence for a job long ended, so the scheduler never recovered the job
and the engine never got its slot back."""

from __future__ import annotations

from datetime import datetime

import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy

from engineroom.actors.admission import HeldSlots, SlotGate
from engineroom.core.errors import StoreUnavailable
from engineroom.models.queue import QueueDocument
from tests.settings import make_settings


def job_message(job_id: str) -> MessageProxy:
    message: Message[None] = Message(
        queue_name="general", actor_name="run", args=(job_id,), kwargs={}, options={"tenant_id": "acme"}
    )
    return MessageProxy(message)


def test_a_handed_over_slot_is_given_back_when_the_take_fails() -> None:
    held, released = HeldSlots(), list[str]()

    def try_acquire(
        engine: str, job_id: str, tenant: str, now: datetime, until: datetime, replacing: str | None
    ) -> bool:
        raise StoreUnavailable()

    def read_queue(engine: str) -> QueueDocument:
        raise AssertionError("not asked when the take fails")

    gate = SlotGate(make_settings(), held, try_acquire, lambda engine, job_id: released.append(job_id), read_queue)
    held.add("ended", "general")  # the slot of a job that just ended, handed over to the next message
    with pytest.raises(StoreUnavailable):
        gate.admit("general", job_message("next"), replacing="ended")
    assert released == ["ended"]  # given back (if the database cannot hear it, its lease lapses)
    assert held.ids() == []  # and no longer held, renewed or listed here


def test_a_job_is_listed_by_its_process_while_its_slot_is_being_taken() -> None:
    # The take's time is the job's started_at. A presence report written while the take waits on the database is
    # stamped after that time: if it left the job out, the scheduler would read "this live worker has reported since
    # the job started and does not hold it" (scheduler/orphans.py) and run the job a second time elsewhere.
    held, listed_during_take = HeldSlots(), list[set[str]]()

    def try_acquire(
        engine: str, job_id: str, tenant: str, now: datetime, until: datetime, replacing: str | None
    ) -> bool:
        listed_during_take.append(held.listed())
        return True

    def read_queue(engine: str) -> QueueDocument:
        raise AssertionError("not asked when the slot is taken")

    gate = SlotGate(make_settings(), held, try_acquire, lambda engine, job_id: None, read_queue)
    assert gate.take("general", "job-1", "acme") is not None
    assert listed_during_take == [{"job-1"}]
    assert held.listed() == {"job-1"} and held.ids() == ["job-1"]


def test_a_job_whose_take_finds_no_room_is_no_longer_listed() -> None:
    held = HeldSlots()

    def no_room(engine: str, job_id: str, tenant: str, now: datetime, until: datetime, replacing: str | None) -> bool:
        assert held.listed() == {"job-1"}
        return False

    def read_queue(engine: str) -> QueueDocument:
        raise AssertionError("take does not read the queue")

    gate = SlotGate(make_settings(), held, no_room, lambda engine, job_id: None, read_queue)
    assert gate.take("general", "job-1", "acme") is None
    assert held.listed() == set() and held.ids() == []
