"""The one broker factory: every process builds its Dramatiq broker here, and enqueues jobs through it."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Queue
from typing import Any, TypeVar

import dramatiq
import pika.exceptions
from dramatiq import Broker, Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import AsyncIO, CurrentMessage

from engineroom.core.config import ENGINES, Settings
from engineroom.core.errors import BrokerUnavailable
from engineroom.models.job import JobDocument

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: RabbitMQ priority levels; job priorities 0-10 map one to one (``x-max-priority``).
MAX_PRIORITY = 10
#: The AMQP reply code of a passive declare of a queue that does not exist.
_NOT_FOUND = 404
#: What a RabbitMQ that cannot be reached (down, restarting, the network lost) raises: pika's connection failures
#: (refused, lost, closed, blocked, timed out), a connection or channel used once it had closed, Dramatiq's wrappers
#: of those, and socket errors. Anything else (RabbitMQ refusing a declare, a bug) is not "unavailable" and keeps
#: its traceback.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    dramatiq.errors.BrokerConnectionError,
    OSError,
)


class _Returned(Exception):
    """RabbitMQ returned a message of a batch: no queue took it."""


class _ExpectedNotFound(logging.Filter):
    """Drops pika's WARNING for a channel RabbitMQ closed with 404 while this thread asks something whose answer may
    be "not found" (a passive declare): the scheduler probed every engine's queue at start, and each absent one put
    a warning in the operators' log. Any other close, or one on another thread, is logged as before."""

    def __init__(self) -> None:
        super().__init__()
        self._expecting = threading.local()

    @contextlib.contextmanager
    def expected(self) -> Iterator[None]:
        self._expecting.on = True
        try:
            yield
        finally:
            self._expecting.on = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(self._expecting, "on", False) and f"({_NOT_FOUND})" in record.getMessage())


_QUIET_NOT_FOUND = _ExpectedNotFound()
logging.getLogger("pika.channel").addFilter(_QUIET_NOT_FOUND)


@dataclass(frozen=True)
class QueueProbe:
    """What RabbitMQ says of an engine's queue when asked without creating it (a passive declare)."""

    exists: bool
    #: Messages ready for delivery. Those consumers hold unacknowledged are not counted: AMQP does not tell them.
    ready: int = 0
    consumers: int = 0


def build_broker(settings: Settings, *, in_process: bool = False) -> Broker:
    """A RabbitMQ broker (or, for ``engineroom dev`` without RabbitMQ, an in-process stub).

    Dramatiq's own ``Retries`` stays in the stack but every engine actor sets ``max_retries=0``: job
    retries are decided from the job document, not from worker memory (dramatiq#827).

    Publisher confirms are on: an enqueue returns once RabbitMQ has the (persistent) message, so the outbox flag
    is cleared only for messages that exist. Without them a message written to a socket just before RabbitMQ
    stopped was lost with its flag already cleared, and its job stayed queued for good (seen in the fault test).
    They cost ~0.4 ms per message here (bench: ``python -m bench batch``).
    """
    broker: Broker
    if in_process:
        broker = PriorityStubBroker()
    else:
        broker = RabbitmqBroker(url=settings.amqp_url, max_priority=MAX_PRIORITY, confirm_delivery=True)
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    dramatiq.set_broker(broker)
    return broker


class _PriorityLine(Queue[bytes]):
    """Encoded messages, highest ``broker_priority`` first and oldest first within a priority: the order
    RabbitMQ's priority queues (``x-max-priority``) keep, for the in-process broker."""

    def _init(self, maxsize: int) -> None:
        self.queue: list[tuple[int, int, bytes]] = []
        self._arrivals = itertools.count()

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: bytes) -> None:
        priority = int(Message.decode(item).options.get("broker_priority") or 0)
        heapq.heappush(self.queue, (-priority, next(self._arrivals), item))

    def _get(self) -> bytes:
        return heapq.heappop(self.queue)[2]


class PriorityStubBroker(StubBroker):
    """Dramatiq's in-process broker, with RabbitMQ's priority order: a backlog waits in the broker's line
    (``actors/admission.py``), so the line must keep the order RabbitMQ keeps."""

    def declare_queue(self, queue_name: str) -> None:
        # StubBroker.declare_queue with a ``_PriorityLine`` for the queue: in place before any consumer can see it.
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = _PriorityLine()
        self.emit_after("declare_queue", queue_name)
        delayed_name = dq_name(queue_name)
        self.queues[delayed_name] = Queue()
        self.delay_queues.add(delayed_name)
        self.emit_after("declare_delay_queue", delayed_name)


def job_message(settings: Settings, job: JobDocument) -> Message[None]:
    """The Dramatiq message that asks an engine to run a job: the job id, plus what RabbitMQ and Dramatiq's
    ``TimeLimit`` need before the document is read (priority, time limit in ms)."""
    if job.engine not in ENGINES:
        raise ValueError(f"unknown engine {job.engine!r}")
    # The tenant goes along for admission before the document is read (per-tenant caps: actors/admission.py).
    options: dict[str, Any] = {"broker_priority": job.priority, "tenant_id": job.tenant_id}
    if job.timeout_s is not None:
        options["time_limit"] = int(job.timeout_s * 1000)
    return Message(
        queue_name=settings.queue_name(job.engine),
        actor_name=settings.queue_name(job.engine),
        args=(job.id,),
        kwargs={},
        options=options,
    )


class Enqueuer:
    """Sends job messages from async code without blocking the event loop.

    pika's BlockingConnection is not thread-safe, and RabbitmqBroker keeps one per thread, so one dedicated
    thread does all of this process's enqueues.
    """

    def __init__(self, broker: Broker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engineroom-enqueue")
        #: The enqueue thread's channel for batches (``_publish_together``); only that thread touches it.
        self._tx_channel: Any = None
        #: Messages of the batch being published that RabbitMQ returned (no queue took them).
        self._returned: list[object] = []

    async def enqueue(self, job: JobDocument) -> None:
        """Put a job on its engine's queue.

        Raises:
          BrokerUnavailable: RabbitMQ refused or could not be reached after Dramatiq's bounded retries.
        """
        await self.send(job_message(self.settings, job))

    async def enqueue_many(self, jobs: list[JobDocument]) -> list[str]:
        """Put jobs on their queues in one thread hop; the ids of those sent, in order, up to the first failure
        (logged), so the caller knows which still owe a message."""
        messages = {job.id: job_message(self.settings, job) for job in jobs}
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._enqueue_all, messages)

    def _enqueue_all(self, messages: dict[str, Message[Any]]) -> list[str]:
        if isinstance(self.broker, RabbitmqBroker) and len(messages) > 1:
            try:
                self._publish_together(self.broker, list(messages.values()))
                return list(messages)
            except (pika.exceptions.AMQPError, OSError, _Returned) as exc:
                logger.warning("%d messages could not be published together (%r); one by one", len(messages), exc)
                self._drop_transaction_channel()
        sent = []
        for job_id, message in messages.items():
            try:
                self.broker.enqueue(message)
            except dramatiq.errors.ConnectionError as exc:
                logger.error("enqueue of job %s failed: %s", job_id, exc)
                break
            sent.append(job_id)
        return sent

    def _publish_together(self, broker: RabbitmqBroker, messages: list[Message[Any]]) -> None:
        """Publish ``messages`` in order in one AMQP transaction: once ``tx.commit`` returns RabbitMQ has every one
        (persistent, on disk), the guarantee of a publisher confirm each, in one round trip instead of one per
        message (a 1,000-job batch spent ~0.5-2 s waiting for confirms one by one). Mandatory, as Dramatiq's own
        publishes: a message no queue takes comes back, and the batch is then sent again one by one (Dramatiq
        declares the queue anew), its first copies harmless duplicates."""
        channel = self._transaction_channel(broker)
        returned = self._returned
        returned.clear()
        for queue_name in {message.queue_name for message in messages}:
            broker.declare_queue(queue_name, ensure=True)
        for message in messages:
            broker.emit_before("enqueue", message, None)
            properties = pika.BasicProperties(delivery_mode=2, priority=message.options.get("broker_priority"))
            channel.basic_publish("", message.queue_name, message.encode(), properties, mandatory=True)
        channel.tx_commit()
        channel.connection.process_data_events(time_limit=0)  # returns come before commit-ok: hand them over
        if returned:
            raise _Returned(f"{len(returned)} of {len(messages)} messages were returned unroutable")
        for message in messages:
            broker.emit_after("enqueue", message, None)

    def _transaction_channel(self, broker: RabbitmqBroker) -> Any:
        """A channel in transaction mode on the enqueue thread's connection (the broker's own, per thread)."""
        connection = broker.connection
        channel = self._tx_channel
        if channel is None or not channel.is_open or channel.connection is not connection:
            channel = connection.channel()
            channel.tx_select()
            channel.add_on_return_callback(lambda *returned: self._returned.append(returned))
            self._tx_channel = channel
        return channel

    def _drop_transaction_channel(self) -> None:
        channel, self._tx_channel = self._tx_channel, None
        if channel is not None and channel.is_open:
            try:
                channel.close()
            except (pika.exceptions.AMQPError, OSError):
                logger.debug("closing a failed transaction channel failed too", exc_info=True)

    async def send(self, message: Message[Any]) -> None:
        """Put any message (a job's, a notification delivery's) on its queue.

        Raises:
          BrokerUnavailable: RabbitMQ refused or could not be reached after Dramatiq's bounded retries.
        """
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.broker.enqueue, message)
        except dramatiq.errors.ConnectionError as exc:
            logger.error("enqueue of %s %s failed: %s", message.actor_name, message.args, exc)
            raise BrokerUnavailable() from exc

    async def ping(self) -> None:
        """Check that the broker answers.

        Raises:
          BrokerUnavailable: it does not.
        """
        if isinstance(self.broker, RabbitmqBroker):
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._executor, self._touch_connection)
            except CONNECTION_ERRORS as exc:
                logger.warning("RabbitMQ readiness check failed: %r", exc)
                raise BrokerUnavailable() from exc

    def _touch_connection(self) -> None:
        assert isinstance(self.broker, RabbitmqBroker)
        broker = self.broker
        self._on_a_live_connection(lambda: broker.connection.process_data_events(time_limit=0))

    def _on_a_live_connection(self, question: Callable[[], T]) -> T:
        """``question``'s answer, asked once more on a new connection if the first attempt finds this thread's
        connection broken: RabbitMQ (or the network) may have reset an idle one, which only its next use notices."""
        try:
            return question()
        except CONNECTION_ERRORS:
            if not isinstance(self.broker, RabbitmqBroker):
                raise
            del self.broker.connection  # drop the broken connection (and its channel); the next access reconnects
            return question()

    async def depth(self, engine: str) -> int | None:
        """Messages waiting in the engine's queue, or ``None`` if the broker cannot say right now."""
        queue = self.settings.queue_name(engine)
        return await self._ask(f"read the depth of {queue}", lambda: self._depth(queue))

    def _depth(self, queue: str) -> int:
        if isinstance(self.broker, StubBroker):
            return self.broker.queues[queue].qsize() if queue in self.broker.queues else 0
        assert isinstance(self.broker, RabbitmqBroker)
        # A (re)declare answers with the message count; dramatiq's helper declares with the queue's own arguments.
        main, _delayed, _dead = self.broker.get_queue_message_counts(queue)
        return int(main)

    async def probe(self, engine: str) -> QueueProbe | None:
        """What RabbitMQ holds for the engine, without declaring its queue (a lost queue stays visible as lost);
        ``None`` from the in-process broker, which cannot lose a queue, or if RabbitMQ cannot say right now."""
        if not isinstance(self.broker, RabbitmqBroker):
            return None
        queue = self.settings.queue_name(engine)
        return await self._ask(f"look at {queue}", lambda: self._probe(queue))

    async def _ask(self, what: str, question: Callable[[], T]) -> T | None:
        """``question``'s answer, on the enqueue thread, or ``None`` if RabbitMQ cannot say right now: figures and
        probes must not fail on a broker hiccup. An unreachable RabbitMQ is a warning; anything else is logged with
        its traceback (still ``None``: a figure is not worth failing a request over)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._on_a_live_connection, question
            )
        except CONNECTION_ERRORS as exc:
            logger.warning("could not %s: %r", what, exc)
        except Exception:
            logger.exception("could not %s", what)
        return None

    def _probe(self, queue: str) -> QueueProbe:
        assert isinstance(self.broker, RabbitmqBroker)
        try:
            with _QUIET_NOT_FOUND.expected():
                answer = self.broker.channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            del self.broker.channel  # RabbitMQ closed it to refuse the declare; the next use opens another
            if exc.reply_code != _NOT_FOUND:
                raise
            return QueueProbe(exists=False)
        except pika.exceptions.AMQPError:
            del self.broker.connection  # broken: the next use reconnects
            raise
        return QueueProbe(exists=True, ready=answer.method.message_count, consumers=answer.method.consumer_count)

    async def declare(self, engine: str) -> None:
        """Create the engine's queue (and its delay and dead-letter queues) if RabbitMQ lacks them.

        Dramatiq declares a queue once per process and trusts it to exist from then on; a queue lost since would
        only come back through its retry of a send that found no queue. This asks RabbitMQ again.

        Raises:
          BrokerUnavailable: RabbitMQ could not be reached after Dramatiq's bounded retries.
        """
        if not isinstance(self.broker, RabbitmqBroker):
            return
        queue = self.settings.queue_name(engine)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._declare, queue)
        except dramatiq.errors.ConnectionError as exc:
            logger.error("could not declare %s: %s", queue, exc)
            raise BrokerUnavailable() from exc

    def _declare(self, queue: str) -> None:
        assert isinstance(self.broker, RabbitmqBroker)
        self.broker.queues_pending.add(queue)  # Dramatiq's "not declared on the server yet"
        self.broker.declare_queue(queue, ensure=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def start_in_process_worker(broker: Broker, *, threads: int, worker_timeout_ms: int = 1000) -> dramatiq.Worker:
    """A Dramatiq worker on threads of this process (``engineroom dev``, tests); the CLI worker boots itself."""
    broker.emit_after("process_boot")  # what dramatiq's CLI does in each worker process: starts TimeLimit
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=worker_timeout_ms)
    worker.start()
    return worker
