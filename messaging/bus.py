"""The events bus: workers and gateways publish to the ``engineroom.events`` topic exchange; every gateway
consumes all of it through its own exclusive queue, so any number of gateways each see every event. Notifiers
instead share one durable queue (``consume``): each event reaches one of them, and waits while none runs.

``LocalEventBus`` is the in-process stand-in used by ``engineroom dev`` without RabbitMQ and by unit tests.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from engineroom.core.config import Settings
from engineroom.core.errors import BrokerUnavailable
from engineroom.core.idle import IdleConnections
from engineroom.models.event import Event
from engineroom.models.notification import NotifiableEvent

logger = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]
#: Handles the events a shared queue delivered together, in order; all are acknowledged when it returns.
BatchHandler = Callable[[list[Event]], None]

#: Publish attempts before an event is reported lost (each failure reconnects first).
MAX_PUBLISH_ATTEMPTS = 3
#: Seconds between reconnect attempts of a gateway's consumer.
CONSUMER_RECONNECT_DELAY_S = 1.0
#: Unacknowledged events a shared-queue consumer holds: the most its handler is given at once (the notifier stores a
#: batch's notifications in one round trip).
SHARED_PREFETCH = 100
#: Seconds a shared-queue consumer waits before handing back an event its handler failed on, so a handler
#: failing on every event (MongoDB down) does not spin.
REDELIVERY_DELAY_S = 1.0
#: The events the notifiers' shared queue is bound for: every notifiable type, even one nobody enables now
#: (``job.started`` by default). Binding a type only once someone enables it would lose, not delay, what is published
#: before the binding, and every publisher declares these bindings again; the notifier drops such events before any
#: read instead (``notifications/preference_cache.py``).
NOTIFIER_ROUTING_KEYS = tuple(str(kind) for kind in NotifiableEvent)


class Subscription(Protocol):
    def close(self) -> None: ...


class EventBus(Protocol):
    def publish(self, event: Event) -> None:
        """Send an event to every gateway; blocking, so call it off the event loop."""

    def subscribe(self, handler: EventHandler, routing_keys: Sequence[str] = ("#",)) -> Subscription:
        """Call ``handler`` (from another thread) with every event published from now on whose type matches
        one of ``routing_keys`` (AMQP topic patterns: ``#`` is everything, ``job.*`` every job event)."""

    def consume(
        self, queue_name: str, handler: BatchHandler, routing_keys: Sequence[str], *, linger_s: float = 0.0
    ) -> Subscription:
        """Call ``handler`` (from another thread) with the events matching ``routing_keys`` that arrived through the
        durable queue ``queue_name`` within ``linger_s`` of the first one, in order, at most ``SHARED_PREFETCH`` at a
        time. Every consumer of that name shares the queue: each event reaches one of them, events published while
        none runs wait for the next, and events are acknowledged only once ``handler`` returned (a batch it raised on
        comes back later: at least once, so handlers must be idempotent)."""

    def close(self) -> None: ...


class LocalEventBus:
    """Delivers events to handlers in this process only."""

    def __init__(self) -> None:
        self._handlers: list[tuple[EventHandler, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    def publish(self, event: Event) -> None:
        with self._lock:
            handlers = list(self._handlers)
        for handler, routing_keys in handlers:
            if any(_topic_matches(pattern, str(event.type)) for pattern in routing_keys):
                handler(event)

    def subscribe(self, handler: EventHandler, routing_keys: Sequence[str] = ("#",)) -> Subscription:
        entry = (handler, tuple(routing_keys))
        with self._lock:
            self._handlers.append(entry)
        return _LocalSubscription(self, entry)

    def consume(
        self, queue_name: str, handler: BatchHandler, routing_keys: Sequence[str], *, linger_s: float = 0.0
    ) -> Subscription:
        """In process there is one consumer: events go to ``handler`` on a thread of its own, in order, in batches
        as on RabbitMQ, so that a publisher never waits for (or deadlocks with) the handler."""
        consumer = _LocalQueueConsumer(queue_name, handler, linger_s)
        consumer.subscription = self.subscribe(consumer.offer, routing_keys)
        consumer.start()
        return consumer

    def unsubscribe(self, entry: tuple[EventHandler, tuple[str, ...]]) -> None:
        with self._lock:
            self._handlers.remove(entry)

    def close(self) -> None:
        with self._lock:
            self._handlers.clear()


class _LocalSubscription:
    def __init__(self, bus: LocalEventBus, entry: tuple[EventHandler, tuple[str, ...]]) -> None:
        self._bus, self._entry = bus, entry

    def close(self) -> None:
        self._bus.unsubscribe(self._entry)


class _LocalQueueConsumer(threading.Thread):
    def __init__(self, queue_name: str, handler: BatchHandler, linger_s: float) -> None:
        super().__init__(name=f"engineroom-consumer-{queue_name}", daemon=True)
        self.handler, self.linger_s = handler, linger_s
        self.subscription: Subscription | None = None
        self._events: queue.Queue[Event | None] = queue.Queue()

    def offer(self, event: Event) -> None:
        self._events.put(event)

    def run(self) -> None:
        while (event := self._events.get()) is not None:
            batch, closing = [event], False
            deadline = time.monotonic() + self.linger_s
            while len(batch) < SHARED_PREFETCH:
                try:
                    event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if event is None:
                    closing = True
                    break
                batch.append(event)
            try:
                self.handler(batch)
            except Exception:  # the loop must survive one bad batch; nothing redelivers it in process
                logger.exception("event handler failed for %d events from %s", len(batch), batch[0].id)
            if closing:
                return

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
        self._events.put(None)
        self.join(timeout=5)


def _topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching, for the in-process bus: ``*`` is one word, ``#`` zero or more."""
    return re.fullmatch(re.escape(pattern).replace(r"\#", ".*").replace(r"\*", "[^.]+"), key) is not None


class RabbitEventBus:
    """Publishes over one pika connection per thread, as Dramatiq's RabbitmqBroker does.

    An idle BlockingConnection misses heartbeats and is closed by the server; a publish that finds it closed
    drops it, reconnects and retries, a bounded number of times.
    """

    def __init__(
        self, amqp_url: str, exchange: str, *, durable_queues: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.parameters = pika.URLParameters(amqp_url)
        self.exchange = exchange
        #: Shared queues (name → routing keys) declared and bound before this bus publishes anything, so events
        #: wait in them even if their consumers have never started yet (RabbitMQ drops what no queue is bound for).
        self.durable_queues = {name: tuple(keys) for name, keys in (durable_queues or {}).items()}
        self._local = threading.local()
        self._idle = IdleConnections()

    def _channel(self) -> BlockingChannel:
        if self._idle.stale():
            self._drop_connection()  # before RabbitMQ drops it: see core/idle.py
        channel: BlockingChannel | None = getattr(self._local, "channel", None)
        if channel is None or not channel.is_open:
            self._drop_connection()
            connection = pika.BlockingConnection(self.parameters)
            channel = connection.channel()
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            for queue_name, routing_keys in self.durable_queues.items():
                _declare_shared_queue(channel, queue_name, self.exchange, routing_keys)
            self._local.connection, self._local.channel = connection, channel
        return channel

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = self._local.channel = None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                logger.debug("closing a broken publisher connection failed", exc_info=True)

    def publish(self, event: Event) -> None:
        """Publish one event.

        Raises:
          BrokerUnavailable: RabbitMQ could not be reached after ``MAX_PUBLISH_ATTEMPTS``.
        """
        body = event.model_dump_json().encode()
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=1)
        for attempt in range(1, MAX_PUBLISH_ATTEMPTS + 1):
            try:
                self._channel().basic_publish(self.exchange, str(event.type), body, properties)
                return
            except (pika.exceptions.AMQPError, OSError) as exc:
                logger.warning("publishing event %s failed (attempt %d): %r", event.id, attempt, exc)
                self._drop_connection()
            except BaseException:
                # An exception raised into this thread (a cancelled job's JobCancelled) can land between the frames
                # of one message: RabbitMQ would close the connection on its next use (505 UNEXPECTED_FRAME).
                self._drop_connection()
                raise
        raise BrokerUnavailable(f"could not publish event {event.id}")

    def subscribe(self, handler: EventHandler, routing_keys: Sequence[str] = ("#",)) -> Subscription:
        return self._start(_RabbitConsumer(self.parameters, self.exchange, _one_by_one(handler), tuple(routing_keys)))

    def consume(
        self, queue_name: str, handler: BatchHandler, routing_keys: Sequence[str], *, linger_s: float = 0.0
    ) -> Subscription:
        consumer = _RabbitConsumer(
            self.parameters, self.exchange, handler, tuple(routing_keys), shared=queue_name, linger_s=linger_s
        )
        return self._start(consumer)

    @staticmethod
    def _start(consumer: _RabbitConsumer) -> Subscription:
        consumer.start()
        if not consumer.ready.wait(timeout=10):
            logger.warning("events consumer not bound yet; it keeps retrying in the background")
        return consumer

    def close(self) -> None:
        self._drop_connection()


def _one_by_one(handler: EventHandler) -> BatchHandler:
    """A batch handler calling ``handler`` with each event, so that one it fails on does not stop the others."""

    def handle_each(events: list[Event]) -> None:
        for event in events:
            try:
                handler(event)
            except Exception:  # a subscriber's bug must not cost the other events
                logger.exception("event handler failed for %s", event.id)

    return handle_each


def _declare_shared_queue(channel: BlockingChannel, name: str, exchange: str, routing_keys: Sequence[str]) -> str:
    """The durable queue ``name``, bound to ``exchange`` for ``routing_keys`` (declaring it again is a no-op)."""
    queue: str = channel.queue_declare(name, durable=True).method.queue
    for routing_key in routing_keys:
        channel.queue_bind(queue, exchange, routing_key=routing_key)
    return queue


class _RabbitConsumer(threading.Thread):
    """Consumes the events exchange through an exclusive, server-named queue (auto-acknowledged), or through the
    durable queue named ``shared`` (acknowledged after the handler); reconnects until closed.

    What arrives within ``linger_s`` of a first delivery is handed to ``handler`` as one batch: pika dispatches
    deliveries one callback at a time, and a batch lets the notifier write them in one round trip.
    """

    def __init__(
        self,
        parameters: pika.URLParameters,
        exchange: str,
        handler: BatchHandler,
        routing_keys: tuple[str, ...],
        *,
        shared: str | None = None,
        linger_s: float = 0.0,
    ) -> None:
        super().__init__(name=f"engineroom-events-consumer-{shared or 'own'}", daemon=True)
        self.parameters, self.exchange, self.handler = parameters, exchange, handler
        self.routing_keys = routing_keys
        self.shared, self.linger_s = shared, linger_s
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        #: Delivery tags and bodies of the current wait, handled together once it ends.
        self._delivered: list[tuple[int, bytes]] = []

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._consume()
            except (pika.exceptions.AMQPError, OSError) as exc:
                if not self._stopping.is_set():
                    logger.warning("events consumer lost RabbitMQ (%r); reconnecting", exc)
                    time.sleep(CONSUMER_RECONNECT_DELAY_S)

    def _consume(self) -> None:
        self._delivered = []  # a lost connection's deliveries come back to whoever consumes next
        self._connection = connection = pika.BlockingConnection(self.parameters)
        channel = connection.channel()
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        if self.shared is None:
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            for routing_key in self.routing_keys:
                channel.queue_bind(queue, self.exchange, routing_key=routing_key)
        else:
            queue = _declare_shared_queue(channel, self.shared, self.exchange, self.routing_keys)
            channel.basic_qos(prefetch_count=SHARED_PREFETCH)
        channel.basic_consume(queue, self._on_message, auto_ack=self.shared is None)
        self.ready.set()
        while not self._stopping.is_set():
            connection.process_data_events(time_limit=0.5)  # returns once something was delivered
            if self._delivered:
                self._gather(connection)
                self._dispatch(channel)
        connection.close()

    def _gather(self, connection: pika.BlockingConnection) -> None:
        """Take in what else arrives within ``linger_s`` of the first delivery (a full prefetch brings no more)."""
        deadline = time.monotonic() + self.linger_s
        while len(self._delivered) < SHARED_PREFETCH and (remaining_s := deadline - time.monotonic()) > 0:
            connection.process_data_events(time_limit=remaining_s)
        connection.process_data_events(time_limit=0)

    def _on_message(
        self, _channel: BlockingChannel, method: pika.spec.Basic.Deliver, _properties: object, body: bytes
    ) -> None:
        self._delivered.append((method.delivery_tag, body))

    def _dispatch(self, channel: BlockingChannel) -> None:
        delivered, self._delivered = self._delivered, []
        handled = self._handle([body for _, body in delivered])
        if self.shared is None:
            return
        last_tag = delivered[-1][0]  # every unacknowledged delivery of this channel is in the batch
        if handled:
            channel.basic_ack(last_tag, multiple=True)
        else:
            time.sleep(REDELIVERY_DELAY_S)
            channel.basic_nack(last_tag, multiple=True, requeue=True)

    def _handle(self, bodies: list[bytes]) -> bool:
        """False if the handler failed (a shared queue hands the events back); malformed events count as done."""
        events: list[Event] = []
        for body in bodies:
            try:
                events.append(Event.model_validate_json(body))
            except ValueError:
                logger.error("dropping a malformed event: %r", body[:200])
        if not events:
            return True
        try:
            self.handler(events)
        except Exception:  # one failing handler must not stop the consumer
            logger.exception("event handler failed for %d events from %s", len(events), events[0].id)
            return False
        return True

    def close(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


def rabbit_event_bus(settings: Settings) -> RabbitEventBus:
    """The events bus a gateway, worker or scheduler publishes with. It declares the notifiers' queue before its
    first publish, so the events of jobs that finish before any notifier ever ran (a fresh deployment whose
    scheduler starts last) wait for one instead of being dropped."""
    return RabbitEventBus(
        settings.amqp_url, settings.events_exchange, durable_queues={settings.notifier_queue: NOTIFIER_ROUTING_KEYS}
    )
