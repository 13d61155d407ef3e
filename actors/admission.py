"""Admission before consumption: a worker takes a capped engine's message only while it holds a slot for it, so an
engine's backlog waits in RabbitMQ — in priority order, at no cost to MongoDB — rather than in the database.

Dramatiq has no hook between a consumer fetching a message and its worker threads running it, so the seam is
``Broker.consume``: each engine queue's consumer is wrapped in a ``GatedConsumer``. It hands a message on only once
``SlotGate.admit`` has taken one of the engine's slots for its job (one conditional update of the engine's document,
``QueueStore.try_acquire``). Until then it holds that one message unacknowledged and fetches nothing more: on
RabbitMQ its prefetch is kept at the number of admitted messages plus one, so the rest of the line stays in
RabbitMQ, where any worker process can take it. A held message retries at once when a slot of its engine is freed
in this process, and every ``RETRY_INTERVAL_S`` for slots freed elsewhere: the database work of a blocked engine is
constant per worker process, whatever its backlog. A held message is the head of the line when it was fetched, so
at most one job per worker process may start ahead of a higher-priority job submitted after it.

A redelivered message whose job holds a slot elsewhere most likely comes from a worker that died running it: its
slot stays held until the scheduler sees that worker gone (or the slot's lease lapses). Such a message is set aside,
unacknowledged, and tried again (after ``RETRY_INTERVAL_S``, then twice as long each time up to ``MAX_ASIDE_RETRY_S``:
the job may be running on a live worker whose connection was reset) while the line goes on behind it: held at the
head, it stopped every other worker of the engine until then (6 s after a ``kill -9`` in the tests; a minute or
more with production leases).

A paused engine is not consumed at all: the held message goes back to the head of its line and the consumer is
cancelled until a check (every ``RETRY_INTERVAL_S``) finds the engine resumed, so the whole backlog then starts in
RabbitMQ's priority order.

A per-tenant cap is the one limit the line itself cannot wait on: a capped tenant's message at the head would hold
back every other tenant. Such a message is passed on marked ``PARK``: the runner parks its job in MongoDB and the
scheduler sends it again when its tenant has room (``Scheduler.start_parked``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pika
from dramatiq import Broker, Consumer, MessageProxy, Middleware, Worker
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.logging import get_logger

from engineroom.core.clock import utcnow
from engineroom.core.config import ENGINES, Settings
from engineroom.models.queue import QueueDocument

logger = logging.getLogger(__name__)

#: Seconds between two tries of a held message while no slot of its engine is freed in this process.
RETRY_INTERVAL_S = 0.5
#: Seconds a gated consumer idles per turn while it holds a message (it wakes sooner on a local release).
IDLE_STEP_S = 0.02
#: Redelivered messages a consumer keeps beside its line at most (see ``GatedConsumer._set_aside``): the slots a
#: worker process of 8 threads can have held when it died, twice.
MAX_SET_ASIDE = 16
#: Seconds between two tries of a message set aside, at most.
MAX_ASIDE_RETRY_S = 5.0
#: The message option that tells the runner what admission decided.
ADMISSION_OPTION = "engineroom_admission"
#: The message option that tells the runner when its job took its slot (ISO 8601).
ADMITTED_AT_OPTION = "engineroom_admitted_at"


class Admission(enum.StrEnum):
    #: A slot of the engine is held for the job: run it.
    ADMITTED = "admitted"
    #: The engine has room but the job's tenant is at its cap: park the job in MongoDB.
    PARK = "park"
    #: No room under the limits: keep holding the message.
    WAIT = "wait"
    #: The engine is paused: give the message back and stop consuming until it is resumed.
    PAUSED = "paused"
    #: A slot is held for the job already (a second message of a job starting elsewhere): drop the message.
    DUPLICATE = "duplicate"


class HeldSlots:
    """The slots this process holds, by job id (their engine): the heartbeat renews them, and a job that ends hands
    its slot over to a consumer of this process waiting for one of that engine (one database write, the
    ``replacing`` form of ``QueueStore.try_acquire``, instead of a release and an acquire), or frees it."""

    def __init__(self) -> None:
        self._engines: dict[str, str] = {}
        #: Slots this process may hold at once: its worker threads (set at boot, ``set_capacity``). A slot held
        #: beyond them would wait in memory for a thread, starting no sooner while another process, idle, cannot
        #: take it; and its job's lease would run down before the job ran.
        self._capacity: int | None = None
        self._freed: dict[str, threading.Event] = {}
        self._waiting: Counter[str] = Counter()
        self._offers: dict[str, deque[str]] = defaultdict(deque)
        #: Held slots whose job's attempt is over, its outcome or retry being written: a message of the job arriving
        #: now is its next attempt (a retry due at once, a retry by hand), which waits for the slot to be freed here.
        self._ending: set[str] = set()
        #: Per engine, what wakes its consumer when its freed event is set (on RabbitMQ the consumer waits in pika's
        #: I/O loop, which no ``threading.Event`` interrupts).
        self._wakers: dict[str, Callable[[], None]] = {}
        #: Jobs whose slot is being taken now: listed with the held ones in this process's presence, so a report
        #: written during the take, stamped after the job's ``started_at`` (the take's start), still names the job
        #: (``scheduler/orphans.py`` takes a job from a live worker whose report since its start leaves it out).
        self._taking: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, job_id: str, engine: str) -> None:
        with self._lock:
            self._engines[job_id] = engine

    def mark_ending(self, job_id: str) -> None:
        """The job's attempt here is over; its slot is freed once its outcome or retry is written."""
        with self._lock:
            if job_id in self._engines:
                self._ending.add(job_id)

    def is_ending(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._ending

    def engine_of(self, job_id: str) -> str | None:
        with self._lock:
            return self._engines.get(job_id)

    def set_capacity(self, capacity: int) -> None:
        with self._lock:
            self._capacity = capacity

    def has_room(self) -> bool:
        """Whether this process may take one more slot (see ``_capacity``)."""
        with self._lock:
            return self._capacity is None or len(self._engines) < self._capacity

    def forget(self, job_id: str, *, freed: bool) -> None:
        """The job's slot is no longer held here (handed over, or ``freed`` back to the engine: then every waiting
        consumer is woken, those of its engine to try for it and the others because this process has room again)."""
        with self._lock:
            engine = self._engines.pop(job_id, None)
            self._ending.discard(job_id)
            woken = [name for name, count in self._waiting.items() if count and name != engine]
        if engine is not None and freed:
            self.wake(engine)
            for name in woken:
                self.wake(name)

    def offer(self, job_id: str) -> bool:
        """Put the slot of a job that ended up for hand-over; False if no consumer here waits for one of its
        engine (the caller frees it then)."""
        with self._lock:
            engine = self._engines.get(job_id)
            if engine is None or self._waiting[engine] <= 0:
                return False
            self._offers[engine].append(job_id)
        self.wake(engine)
        return True

    def has_offer(self, engine: str) -> bool:
        """Whether a slot of ``engine`` waits to be taken over: several jobs may end during one admission, and
        each admission takes one offer, so the freed event alone would leave the rest held by no job."""
        with self._lock:
            return bool(self._offers[engine])

    def take_offer(self, engine: str) -> str | None:
        """A slot of ``engine`` put up for hand-over (the job id it was held for), if any."""
        with self._lock:
            offers = self._offers[engine]
            return offers.popleft() if offers else None

    def set_waiting(self, engine: str, waiting: bool) -> None:
        """A consumer starts (or stops) waiting for a slot of ``engine``."""
        with self._lock:
            self._waiting[engine] += 1 if waiting else -1

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._engines)

    @contextlib.contextmanager
    def taking(self, job_id: str) -> Iterator[None]:
        """List ``job_id`` (``listed``) while its slot is being taken, before the take's time is read."""
        with self._lock:
            self._taking[job_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._taking[job_id] -= 1
                if self._taking[job_id] <= 0:
                    del self._taking[job_id]

    def listed(self) -> set[str]:
        """The jobs held here or whose slot is being taken: what this process's presence reports."""
        with self._lock:
            return {*self._engines, *self._taking}

    def wake(self, engine: str) -> None:
        """Tell ``engine``'s consumer a slot may be had: set its freed event and interrupt its wait."""
        self.freed_event(engine).set()
        with self._lock:
            waker = self._wakers.get(engine)
        if waker is not None:
            waker()

    def set_waker(self, engine: str, waker: Callable[[], None]) -> None:
        """What interrupts the wait of ``engine``'s consumer (its newest: a consumer is remade after a lost
        connection)."""
        with self._lock:
            self._wakers[engine] = waker

    def freed_event(self, engine: str) -> threading.Event:
        with self._lock:
            return self._freed.setdefault(engine, threading.Event())


class SlotGate:
    """Decides admission for one message: take a slot of its engine for its job, else say why not.

    ``try_acquire(engine, job_id, tenant_id, now, until, replacing)`` takes the slot (in place of the slot held for the
    job ``replacing``, when given); ``release(engine, job_id)`` gives one back; ``read_queue(engine)`` reads the
    engine's document (all on the worker's stores).
    """

    def __init__(
        self,
        settings: Settings,
        held: HeldSlots,
        try_acquire: Callable[[str, str, str, datetime, datetime, str | None], bool],
        release: Callable[[str, str], None],
        read_queue: Callable[[str], QueueDocument],
    ) -> None:
        self.settings = settings
        self.held = held
        self._try_acquire = try_acquire
        self._release = release
        self._read_queue = read_queue
        self._queues_seen: dict[str, tuple[float, QueueDocument]] = {}

    def admit(self, engine: str, message: MessageProxy, replacing: str | None = None) -> Admission:
        """Take a slot for the message's job: the one held for the job ``replacing`` (handed over here), if given,
        else a free one; that handed-over slot is freed if it cannot be taken over."""
        job_id = str(message.args[0]) if message.args else ""
        tenant_id = str(message.options.get("tenant_id", ""))
        try:
            taken_at = self.take(engine, job_id, tenant_id, replacing)
        except Exception:
            # The database failed: the handed-over slot must not stay held here, renewed by the heartbeat and listed
            # as this process's, for a job that ended (the scheduler would never recover it, nor the engine its slot).
            if replacing is not None:
                self.release(engine, replacing)
            raise
        if taken_at is not None:
            # The job starts when it takes its slot: the time its start counts against a rate limit is its
            # ``started_at`` too.
            message.options[ADMITTED_AT_OPTION] = taken_at.isoformat()
            return Admission.ADMITTED
        if replacing is not None:  # the limits shrank, or the engine was paused: the slot goes back
            self.release(engine, replacing)
        # A redelivered message is judged on the engine's document read now: its job may hold a slot elsewhere (see
        # ``GatedConsumer._set_aside``), which one read up to ``RETRY_INTERVAL_S`` ago may not show.
        return self.refusal(engine, tenant_id, job_id, fresh=getattr(message, "redelivered", False))

    def take(self, engine: str, job_id: str, tenant_id: str, replacing: str | None = None) -> datetime | None:
        """Take a slot of ``engine`` for ``job_id`` (in place of the one held for ``replacing``): when, or None if
        the engine has no room for it."""
        with self.held.taking(job_id):
            now = utcnow()
            until = now + timedelta(seconds=self.settings.slot_lease_s)
            if not self._try_acquire(engine, job_id, tenant_id, now, until, replacing):
                return None
            if replacing is not None:
                self.held.forget(replacing, freed=False)
            self.held.add(job_id, engine)
        return now

    def refusal(self, engine: str, tenant_id: str, job_id: str = "", *, fresh: bool = False) -> Admission:
        """Why a job of ``tenant_id`` cannot start: the engine's pause and per-tenant cap are read at most every
        ``RETRY_INTERVAL_S`` (they change rarely), the tenant's slots afresh where a cap is set."""
        queue, read_now = self._queue(engine, fresh=fresh)
        if queue.paused:
            return Admission.PAUSED
        if not read_now and (
            (tenant_id and queue.max_concurrency_per_tenant is not None)
            or queue.start_room(utcnow(), self.settings.rate_window_s) > 0
        ):
            # A take that failed where the remembered document shows room: it is out of date, or the job holds a
            # slot already (a duplicate, held at the head of the line for a retry until this read, a second after a
            # worker died in the kill-under-load test). Either way, judge on the document as it is now.
            queue, read_now = self._queue(engine, fresh=True)
        # Slots are judged on a document read now only: one remembered would show slots since freed (a job whose
        # retry this is, say).
        if read_now and job_id and any(holder.job_id == job_id for holder in queue.live_holders(utcnow())):
            # Held here by the attempt that just ended: this is the job's next attempt, come before that slot was
            # freed (the scheduler re-queues a retry due at once within milliseconds); dropped, it would wait
            # queued with no message. Held by a job still running, here or elsewhere: a duplicate message.
            return Admission.WAIT if self.held.is_ending(job_id) else Admission.DUPLICATE
        if read_now and tenant_id and queue.only_tenant_cap_blocks(tenant_id, utcnow(), self.settings.rate_window_s):
            return Admission.PARK
        return Admission.WAIT

    def _queue(self, engine: str, *, fresh: bool) -> tuple[QueueDocument, bool]:
        """The engine's document, and whether it was read just now."""
        read_at, queue = self._queues_seen.get(engine, (float("-inf"), None))
        if queue is not None and not fresh and time.monotonic() - read_at <= RETRY_INTERVAL_S:
            return queue, False
        queue = self._read_queue(engine)
        self._queues_seen[engine] = (time.monotonic(), queue)
        return queue, True

    def release(self, engine: str, job_id: str) -> None:
        """Give back the slot held for ``job_id`` (a lapse is the fallback if the database cannot be reached)."""
        try:
            self._release(engine, job_id)
        except Exception:
            logger.warning("could not free the slot of job %s on %s; its lease lapses by itself", job_id, engine)
        self.held.forget(job_id, freed=True)

    def release_offers(self, engine: str) -> None:
        """Give back the slots handed over to no one (their consumer found no message to take them)."""
        while (job_id := self.held.take_offer(engine)) is not None:
            self.release(engine, job_id)


class _Line:
    """How a gated consumer works its broker's consumer beyond fetching: the in-process broker's version."""

    def __init__(self, inner: Any, freed: threading.Event) -> None:
        self.inner = inner
        self.freed = freed

    def give_back(self, message: MessageProxy) -> None:
        """Return a fetched message to the head of its line."""
        self.inner.queue.put(message.encode())
        self.inner.ack(message)  # the fetched copy: its place in the queue's accounting and its prefetch slot

    def stop_fetching(self) -> None:
        """Nothing to do: a consumer that is not asked for messages takes none."""

    def start_fetching(self) -> None:
        """See ``stop_fetching``."""

    def idle(self, seconds: float) -> None:
        self.freed.wait(seconds)

    def wake(self) -> None:
        """Interrupt ``idle`` from another thread: the freed event does it here."""

    def set_prefetch(self, prefetch: int) -> None:
        """The in-process broker shares its line with no other process."""


def _nothing() -> None:
    """A callback that only wakes a pika connection's loop."""


class _RabbitLine(_Line):
    """On RabbitMQ, on the consumer's own thread (pika's connections are not thread-safe)."""

    def __init__(self, inner: Any, freed: threading.Event, timeout_ms: int) -> None:
        super().__init__(inner, freed)
        self.timeout_ms = timeout_ms
        #: The channel-wide prefetch the gate wants, and the one RabbitMQ has (``_LineConsumer`` starts at one).
        self._wanted_prefetch = self._applied_prefetch = 1
        self._prefetch_lock = threading.Lock()

    def give_back(self, message: MessageProxy) -> None:
        self.inner.known_tags.discard(message._tag)
        self.inner.channel.basic_nack(message._tag, requeue=True)

    def stop_fetching(self) -> None:
        # Cancels the consumer; messages it buffered go back to the queue, those handed on can still be acked.
        self.inner.channel.cancel()

    def start_fetching(self) -> None:
        timeout_s = self.timeout_ms / 1000
        self.inner.iterator = self.inner.channel.consume(self.inner.queue_name, inactivity_timeout=timeout_s)

    def idle(self, seconds: float) -> None:
        self.inner.connection.process_data_events(time_limit=seconds)  # serves acks and heartbeats meanwhile

    def wake(self) -> None:
        # A callback queued from another thread ends ``process_data_events`` early: a slot freed by a worker thread
        # is taken at once rather than at the end of the idle step (~10 ms a hand-over, at a capped engine's pace).
        try:
            self.inner.connection.add_callback_threadsafe(_nothing)
        except Exception:  # best effort, called as a job frees its slot: the idle step bounds the wait anyway
            logger.debug("could not wake the %s consumer", self.inner.queue_name, exc_info=True)

    def set_prefetch(self, prefetch: int) -> None:
        # Scheduled like Dramatiq schedules its acks: this may be called from a worker thread.
        with self._prefetch_lock:
            self._wanted_prefetch = prefetch
        self.inner.connection.add_callback_threadsafe(self._apply_prefetch)

    def _apply_prefetch(self) -> None:
        """On the consumer's thread: send the prefetch wanted now, unless RabbitMQ has it already. ``basic_qos`` is
        a round trip that holds this thread, and a job that ends and the admission that takes its slot change the
        prefetch by one and back: queued together, they now cost none."""
        with self._prefetch_lock:
            wanted = self._wanted_prefetch
        if wanted != self._applied_prefetch:
            self.inner.channel.basic_qos(prefetch_count=wanted, global_qos=True)
            self._applied_prefetch = wanted


class _LineConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, with a channel-wide prefetch of one set before it consumes and no prefetch of
    its own: RabbitMQ applies a new channel-wide (``global``) prefetch at once, while a consumer's own is fixed when
    it starts — and the gate must raise it as it admits messages."""

    def __init__(self, broker: RabbitmqBroker, queue_name: str, timeout_ms: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        try:
            self.connection = pika.BlockingConnection(parameters=broker.parameters)
            self.channel = self.connection.channel()
            self.channel.basic_qos(prefetch_count=1, global_qos=True)
            self.iterator = self.channel.consume(queue_name, inactivity_timeout=timeout_ms / 1000)
            self.known_tags: set[int] = set()
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]


class GatedConsumer(Consumer):
    """A consumer of one engine queue that yields a message only once ``gate`` admitted it (see the module)."""

    def __init__(self, inner: Consumer, line: _Line, engine: str, gate: SlotGate) -> None:
        self.inner = inner
        self.line = line
        self.engine = engine
        self.gate = gate
        self._held: MessageProxy | None = None
        self._next_try = 0.0
        self._paused = False
        #: Whether the last admission left the engine without room (see ``_try_admit``).
        self._full = False
        self._freed = gate.held.freed_event(engine)
        #: Admitted messages not yet acknowledged: they count against RabbitMQ's prefetch.
        self._admitted: set[Any] = set()
        #: Messages set aside (``_set_aside``), by message id, with when to try each again: they count too.
        self._aside: dict[Any, tuple[MessageProxy, float]] = {}
        #: How many times each message set aside was tried, for its backoff (forgotten once it is admitted).
        self._aside_tries: Counter[Any] = Counter()
        self._unacked_lock = threading.Lock()

    def __iter__(self) -> GatedConsumer:
        return self

    def __next__(self) -> MessageProxy | None:
        if self._paused:
            self._while_paused()
            return None
        if self._held is None:
            message = self._due_aside() or next(self.inner)
            if message is None:
                self.gate.release_offers(self.engine)
                return None
            self._hold(message)
        if self._held is not None and (
            self._freed.is_set() or self.gate.held.has_offer(self.engine) or time.monotonic() >= self._next_try
        ):
            self._freed.clear()
            return self._try_admit(self._held)
        self.line.idle(IDLE_STEP_S)
        return None

    def _hold(self, message: MessageProxy | None) -> None:
        """Hold ``message`` (waiting for a slot), or nothing; jobs ending here hand their slots over meanwhile."""
        if (self._held is None) != (message is None):
            self.gate.held.set_waiting(self.engine, message is not None)
        self._held = message
        self._next_try = time.monotonic() + RETRY_INTERVAL_S if self._full else 0.0

    def _try_admit(self, message: MessageProxy) -> MessageProxy | None:
        handed_over = self.gate.held.take_offer(self.engine)
        if handed_over is None and not self.gate.held.has_room():
            # Every worker thread has a job: wait for one to end (it wakes this consumer) without asking MongoDB.
            self._next_try = time.monotonic() + RETRY_INTERVAL_S
            self.line.idle(IDLE_STEP_S)
            return None
        try:
            verdict = self.gate.admit(self.engine, message, handed_over)
        except Exception:  # the database is down or slow: keep the message, try again later
            logger.warning("admission of a %s message failed; retrying", self.engine, exc_info=True)
            verdict = Admission.WAIT
        if verdict is Admission.DUPLICATE and getattr(message, "redelivered", False):
            # Its holder may be the worker that died holding this very message: wait for that slot to be freed.
            if len(self._aside) < MAX_SET_ASIDE:
                self._set_aside(message)
                return None
            verdict = Admission.WAIT
        # Still full after a hand-over (it takes one slot for another) or a refusal: the next message waits for a
        # slot to come free instead of trying at once and failing.
        self._full = verdict is Admission.WAIT or (verdict is Admission.ADMITTED and handed_over is not None)
        if verdict in (Admission.WAIT, Admission.PAUSED):
            self._next_try = time.monotonic() + RETRY_INTERVAL_S
            if verdict is Admission.PAUSED:
                self._pause()
            self.line.idle(IDLE_STEP_S)
            return None
        self._hold(None)
        self._aside_tries.pop(message.message_id, None)
        message.options[ADMISSION_OPTION] = str(verdict)
        if verdict is Admission.ADMITTED:
            with self._unacked_lock:
                self._admitted.add(message.message_id)
            self._set_prefetch()
        return message

    def _set_aside(self, message: MessageProxy) -> None:
        """Keep ``message`` unacknowledged beside the line, to be tried again after a wait that doubles with each try
        (``RETRY_INTERVAL_S`` up to ``MAX_ASIDE_RETRY_S``), and go on with the line (the module says why)."""
        tries = self._aside_tries[message.message_id]
        self._aside_tries[message.message_id] += 1
        retry_in = min(MAX_ASIDE_RETRY_S, RETRY_INTERVAL_S * 2**tries)
        with self._unacked_lock:
            self._aside[message.message_id] = (message, time.monotonic() + retry_in)
        logger.debug("job %s holds a %s slot elsewhere; its message waits aside", message.args[0], self.engine)
        self._full = False
        self._hold(None)
        self._set_prefetch()

    def _due_aside(self) -> MessageProxy | None:
        """A message set aside whose time to be tried again has come, taken back from beside the line."""
        now = time.monotonic()
        with self._unacked_lock:
            due = next((key for key, (_, retry_at) in self._aside.items() if retry_at <= now), None)
            if due is None:
                return None
            message, _ = self._aside.pop(due)
        self._set_prefetch()
        return message

    def _forget_aside(self) -> list[MessageProxy]:
        """Every message set aside, no longer kept here."""
        with self._unacked_lock:
            aside = [message for message, _ in self._aside.values()]
            self._aside.clear()
        self._aside_tries.clear()
        return aside

    def _pause(self) -> None:
        """Give the held message and those set aside back and fetch nothing while the engine is paused: its whole
        line, in priority order, waits in the broker for the resume."""
        if self._held is not None:
            self.line.give_back(self._held)
            self._hold(None)
        for message in self._forget_aside():
            self.line.give_back(message)
        self.gate.release_offers(self.engine)
        self.line.stop_fetching()
        self._paused = True
        logger.info("%s is paused: not consuming it", self.engine)

    def _while_paused(self) -> None:
        if time.monotonic() >= self._next_try:
            try:
                paused = self.gate.refusal(self.engine, "", fresh=True) is Admission.PAUSED
            except Exception:
                logger.warning("could not read whether %s is still paused; retrying", self.engine, exc_info=True)
                paused = True
            if not paused:
                self._paused = False
                self.line.start_fetching()
                logger.info("%s is resumed: consuming it again", self.engine)
                return
            self._next_try = time.monotonic() + RETRY_INTERVAL_S
        self.line.idle(IDLE_STEP_S)
        return

    def _set_prefetch(self) -> None:
        """Admitted messages and those set aside, plus the one this consumer may hold."""
        with self._unacked_lock:
            prefetch = len(self._admitted) + len(self._aside) + 1
        self.line.set_prefetch(prefetch)

    def _settled(self, message: MessageProxy) -> None:
        with self._unacked_lock:
            if message.message_id not in self._admitted:
                return
            self._admitted.discard(message.message_id)
        self._set_prefetch()

    def ack(self, message: MessageProxy) -> None:
        self.inner.ack(message)
        self._settled(message)

    def nack(self, message: MessageProxy) -> None:
        self.inner.nack(message)
        self._settled(message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Give messages back to the line (the worker stops, or lost its connection), freeing first the slots of
        those admitted: they never ran here, and a slot left held for a job whose message another worker then takes
        stops that job until the slot's lease lapses (four job leases; a 13 s wait in the SIGTERM test)."""
        messages = list(messages)
        for message in messages:
            with self._unacked_lock:
                admitted = message.message_id in self._admitted
                self._admitted.discard(message.message_id)
            if admitted:
                self.gate.release(self.engine, str(message.args[0]))
        self.inner.requeue(messages)

    def close(self) -> None:
        self._hold(None)  # RabbitMQ gets it back with the connection, and those set aside
        self._forget_aside()
        self.gate.release_offers(self.engine)
        self.inner.close()


class _ThreadCapacity(Middleware):
    """Bounds the slots a worker process holds by its worker threads, known once its ``Worker`` boots (before its
    consumers start)."""

    def __init__(self, held: HeldSlots) -> None:
        self.held = held

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.held.set_capacity(worker.worker_threads)


def install_gate(broker: Broker, settings: Settings, gate: SlotGate) -> None:
    """Wrap every consumer of an engine queue that ``broker`` makes from now on in a ``GatedConsumer``, and hold no
    more slots than the worker has threads."""
    broker.add_middleware(_ThreadCapacity(gate.held))
    engines = {settings.queue_name(engine): engine for engine in ENGINES}
    consume = broker.consume

    def gated_consume(queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        engine = engines.get(queue_name)
        if engine is None:
            return consume(queue_name, prefetch, timeout)
        freed = gate.held.freed_event(engine)
        if isinstance(broker, RabbitmqBroker):
            broker.declare_queue(queue_name, ensure=True)  # as ``RabbitmqBroker.consume`` does
            line_consumer = _LineConsumer(broker, queue_name, timeout)
            line = _RabbitLine(line_consumer, freed, timeout)
            gate.held.set_waker(engine, line.wake)
            return GatedConsumer(line_consumer, line, engine, gate)
        inner = consume(queue_name, prefetch, timeout)  # in-process: no line shared with other processes
        return GatedConsumer(inner, _Line(inner, freed), engine, gate)

    broker.consume = gated_consume  # type: ignore[method-assign]
