"""A slot handed over to a waiting message is never left held by a process when the database fails mid-hand-over.

Seen in CI (``test_secantusdb_killed_and_restarted…``): a job ended while SecantusDB was down, its slot was offered to
the consumer waiting for one, that consumer's take failed, and the slot stayed in the process's ``HeldSlots`` —
renewed by every heartbeat and listed in its presence for a job long ended, so the scheduler never recovered the job
and the engine never got its slot back."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import cast

import pytest
from dramatiq import Consumer, Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqMessage

from engineroom.actors.admission import (
    RETRY_INTERVAL_S,
    Admission,
    GatedConsumer,
    HeldSlots,
    SlotGate,
    _Line,
    _LineConsumer,
    _RabbitLine,
)
from engineroom.core.clock import utcnow
from engineroom.core.errors import StoreUnavailable
from engineroom.models.queue import QueueDocument, SlotHolder
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


class _Fetched:
    """An engine queue's consumer holding ``messages``, in order, then nothing; it keeps what it is given back."""

    def __init__(self, messages: list[MessageProxy]) -> None:
        self.messages = messages
        self.requeued: list[str] = []

    def ack(self, message: MessageProxy) -> None:
        """Nothing to settle in memory."""

    def requeue(self, messages: list[MessageProxy]) -> None:
        self.requeued += [str(message.args[0]) for message in messages]

    def __iter__(self) -> _Fetched:
        return self

    def __next__(self) -> MessageProxy | None:
        return self.messages.pop(0) if self.messages else None


def test_every_slot_put_up_by_jobs_ending_together_is_taken_over_at_once() -> None:
    # Seen in the burst bench: jobs ending during one admission each put their slot up for hand-over, an admission
    # takes one, and the rest waited (held by no job) for the next freed event or the half-second retry, so a process
    # limited to 8 ran 2 or 3 jobs at a time.
    held, taken = HeldSlots(), list[tuple[str, str | None]]()
    held.set_capacity(2)

    def try_acquire(
        engine: str, job_id: str, tenant: str, now: datetime, until: datetime, replacing: str | None
    ) -> bool:
        taken.append((job_id, replacing))
        return True

    def read_queue(engine: str) -> QueueDocument:
        raise AssertionError("every take succeeds here")

    gate = SlotGate(make_settings(), held, try_acquire, lambda engine, job_id: None, read_queue)
    inner = _Fetched([job_message(job_id) for job_id in ("a", "b", "c", "d")])
    consumer = GatedConsumer(cast(Consumer, inner), _Line(inner, held.freed_event("general")), "general", gate)
    assert [next(consumer).args[0] for _ in range(2)] == ["a", "b"]  # type: ignore[union-attr]
    assert next(consumer) is None  # c waits: both slots are held
    # When a and b end together
    assert held.offer("a") and held.offer("b")
    # Then c and d take their slots over without waiting for a retry
    started = time.monotonic()
    admitted = [message.args[0] for message in (next(consumer) for _ in range(3)) if message is not None]
    assert admitted == ["c", "d"] and time.monotonic() - started < RETRY_INTERVAL_S
    assert taken[2:] == [("c", "a"), ("d", "b")]
    assert sorted(held.ids()) == ["c", "d"]


def test_a_consumer_waiting_on_rabbitmq_for_a_slot_wakes_as_soon_as_one_is_freed(amqp_url: str, namespace: str) -> None:
    # A gated consumer waits for a slot inside pika's I/O loop (serving acks and heartbeats), which no
    # threading.Event interrupts: without a wake it noticed a freed slot only at the end of its idle step.
    queue_name = f"{namespace}general"
    broker = RabbitmqBroker(url=amqp_url)
    broker.declare_queue(queue_name, ensure=True)
    held = HeldSlots()
    line_consumer = _LineConsumer(broker, queue_name, timeout_ms=1000)
    line = _RabbitLine(line_consumer, held.freed_event("general"), timeout_ms=1000)
    held.set_waker("general", line.wake)
    try:
        threading.Timer(0.1, held.wake, args=("general",)).start()
        started = time.monotonic()
        line.idle(5.0)
        assert time.monotonic() - started < 2.0
    finally:
        line_consumer.connection.close()
        broker.close()


def test_a_prefetch_lowered_and_raised_again_before_the_consumer_runs_costs_rabbitmq_no_round_trip(
    amqp_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gate keeps a consumer's prefetch at its admitted messages plus one: a job that ends lowers it, and the
    # admission that takes its slot raises it again. Each was a basic_qos round trip on the consumer's thread.
    queue_name = f"{namespace}general"
    broker = RabbitmqBroker(url=amqp_url)
    broker.declare_queue(queue_name, ensure=True)
    line_consumer = _LineConsumer(broker, queue_name, timeout_ms=1000)
    line = _RabbitLine(line_consumer, threading.Event(), timeout_ms=1000)
    sent: list[int] = []
    basic_qos = line_consumer.channel.basic_qos

    def counted(*, prefetch_count: int, global_qos: bool) -> None:
        sent.append(prefetch_count)
        basic_qos(prefetch_count=prefetch_count, global_qos=global_qos)

    monkeypatch.setattr(line_consumer.channel, "basic_qos", counted)
    try:
        # Given one admitted message
        line.set_prefetch(2)
        line.idle(0.05)
        # When its job ends and the next admission follows before the consumer's loop runs
        line.set_prefetch(1)
        line.set_prefetch(2)
        line.idle(0.05)
        # Then RabbitMQ, which has 2 already, is not asked again; a real change still is
        line.set_prefetch(3)
        line.idle(0.05)
        assert sent == [2, 3]
    finally:
        line_consumer.connection.close()
        broker.close()


@pytest.mark.parametrize(("attempt_over", "verdict"), [(True, Admission.WAIT), (False, Admission.DUPLICATE)])
def test_a_message_of_a_job_whose_slot_is_held_here_waits_only_once_its_attempt_is_over(
    attempt_over: bool, verdict: Admission
) -> None:
    # Seen in CI: a retry due at once was re-queued by the scheduler while the failed attempt's worker was still
    # recording it, slot held; the retry's message was judged a duplicate and dropped, and the job waited, queued,
    # with no message. A message of a job still running is a duplicate, dropped as before.
    held = HeldSlots()
    held.add("job-1", "general")
    if attempt_over:
        held.mark_ending("job-1")
    holder = SlotHolder(job_id="job-1", tenant_id="acme", worker_id="here", expires_at=utcnow() + timedelta(minutes=1))

    def no_room(engine: str, job_id: str, tenant: str, now: datetime, until: datetime, replacing: str | None) -> bool:
        return False  # the job holds a slot already

    def read_queue(engine: str) -> QueueDocument:
        return QueueDocument(engine="general", max_concurrency=2, holders=[holder])

    gate = SlotGate(make_settings(), held, no_room, lambda engine, job_id: None, read_queue)
    assert gate.admit("general", job_message("job-1")) is verdict
    held.forget("job-1", freed=True)
    assert not held.is_ending("job-1")


def test_a_redelivered_message_of_a_job_a_dead_worker_holds_waits_aside_while_the_line_goes_on() -> None:
    # Seen in the kill -9 test: the dead worker's running jobs came back to the survivor, whose consumer held the first
    # at the head of the line until the scheduler freed the dead worker's slots, 6 s later: the survivor, with free
    # threads and the engine with free slots, ran nothing meanwhile.
    held, dead_holds = HeldSlots(), threading.Event()
    held.set_capacity(4)
    dead_holds.set()
    holder = SlotHolder(job_id="lost", tenant_id="acme", worker_id="dead", expires_at=utcnow() + timedelta(minutes=1))

    def try_acquire(
        engine: str, job_id: str, tenant: str, now: datetime, until: datetime, replacing: str | None
    ) -> bool:
        return not (job_id == "lost" and dead_holds.is_set())

    def read_queue(engine: str) -> QueueDocument:
        return QueueDocument(engine="general", max_concurrency=8, holders=[holder] if dead_holds.is_set() else [])

    gate = SlotGate(make_settings(), held, try_acquire, lambda engine, job_id: None, read_queue)
    lost = _RabbitmqMessage(True, 1, job_message("lost")._message)  # type: ignore[no-untyped-call]
    inner = _Fetched([lost, job_message("a"), job_message("b")])
    consumer = GatedConsumer(cast(Consumer, inner), _Line(inner, held.freed_event("general")), "general", gate)

    def admitted(calls: int) -> list[str]:
        return [message.args[0] for message in (next(consumer) for _ in range(calls)) if message is not None]

    # When the lost job's message comes first, its slot still held by the dead worker
    # Then the jobs behind it start at once
    assert admitted(3) == ["a", "b"]
    assert sorted(held.ids()) == ["a", "b"]
    # And once the scheduler frees the dead worker's slot, the lost job starts within a retry
    dead_holds.clear()
    deadline = time.monotonic() + 5 * RETRY_INTERVAL_S
    started: list[str] = []
    while not started and time.monotonic() < deadline:
        started = admitted(1)
    assert started == ["lost"]


def test_a_duplicate_is_told_at_once_where_the_remembered_document_shows_room() -> None:
    # After a kill the survivor got second messages of the dead worker's jobs: each take failed, the engine's document
    # remembered from less than RETRY_INTERVAL_S ago showed room and no holder for the job, so the message waited at
    # the head of the line for half a second before a fresh read called it a duplicate (2 s for four of them).
    held = HeldSlots()
    holders: list[SlotHolder] = []
    reads: list[int] = []

    def try_acquire(
        engine: str, job_id: str, tenant: str, now: datetime, until: datetime, replacing: str | None
    ) -> bool:
        return not any(holder.job_id == job_id for holder in holders)

    def read_queue(engine: str) -> QueueDocument:
        reads.append(len(holders))
        return QueueDocument(engine="general", max_concurrency=8, holders=list(holders))

    gate = SlotGate(make_settings(), held, try_acquire, lambda engine, job_id: None, read_queue)
    assert gate.refusal("general", "acme") is Admission.WAIT  # the document is read, and remembered
    holders.append(SlotHolder(job_id="dup", tenant_id="acme", worker_id="other", expires_at=utcnow() + timedelta(1)))
    assert gate.admit("general", job_message("dup")) is Admission.DUPLICATE
    assert reads == [0, 1]


def test_a_worker_stopping_frees_the_slots_of_the_admitted_messages_it_gives_back() -> None:
    # Seen in the SIGTERM test: a message admitted as the worker began to stop never ran; Dramatiq gave it back to
    # RabbitMQ with its slot still held, and the next worker could not start that job until the slot's lease lapsed.
    held, released = HeldSlots(), list[str]()

    def try_acquire(
        engine: str, job_id: str, tenant: str, now: datetime, until: datetime, replacing: str | None
    ) -> bool:
        return True

    def read_queue(engine: str) -> QueueDocument:
        raise AssertionError("every take succeeds here")

    gate = SlotGate(make_settings(), held, try_acquire, lambda engine, job_id: released.append(job_id), read_queue)
    inner = _Fetched([job_message("ran"), job_message("never-ran")])
    consumer = GatedConsumer(cast(Consumer, inner), _Line(inner, held.freed_event("general")), "general", gate)
    ran, never_ran = next(consumer), next(consumer)
    assert ran is not None and never_ran is not None
    consumer.ack(ran)  # as its worker thread would once it finished
    held.forget("ran", freed=True)

    consumer.requeue([never_ran])

    assert (released, inner.requeued, held.ids()) == (["never-ran"], ["never-ran"], [])
