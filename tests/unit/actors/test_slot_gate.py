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
