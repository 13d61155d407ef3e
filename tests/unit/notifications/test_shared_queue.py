"""``RabbitEventBus.consume`` on the real RabbitMQ: a durable queue shared by consumers, acknowledged after the
handler, so events wait while no consumer runs and come back when a handler fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engineroom.core.config import Settings
from engineroom.core.ids import new_id
from engineroom.messaging.bus import NOTIFIER_ROUTING_KEYS, RabbitEventBus, rabbit_event_bus
from engineroom.models.event import Event, EventType, new_event


def completed() -> Event:
    return new_event(EventType.JOB_COMPLETED, tenant_id="acme", user_id="alice", job_id=new_id(), data={})


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_events_published_while_no_consumer_runs_wait_and_a_failed_one_comes_back(
    amqp_url: str, namespace: str
) -> None:
    bus = RabbitEventBus(amqp_url, f"{namespace}engineroom.events")
    queue = f"{namespace}engineroom.notifier"
    handled: list[str] = []
    failed_once: set[str] = set()
    lock = threading.Lock()

    def handler(events: list[Event]) -> None:
        with lock:
            if any(event.id not in failed_once for event in events):
                failed_once.update(event.id for event in events)
                raise RuntimeError("MongoDB is down, say")
            handled.extend(event.id for event in events)

    # Given the queue exists (a notifier ran once) but no consumer runs now
    bus.consume(queue, handler, routing_keys=["job.completed"]).close()
    early, ignored = completed(), new_event(EventType.JOB_PROGRESS, tenant_id="acme", user_id="alice", data={})
    bus.publish(early)
    bus.publish(ignored)
    # When a consumer starts again, and its handler fails on each event once
    subscription = bus.consume(queue, handler, routing_keys=["job.completed"])
    try:
        late = completed()
        bus.publish(late)
        # Then both matching events are handled, each after coming back once, and nothing else
        wait_for(lambda: sorted(handled) == sorted([early.id, late.id]), "both events handled")
    finally:
        subscription.close()
        bus.close()
    assert failed_once == {early.id, late.id}


def test_events_published_before_any_notifier_ever_ran_wait_for_the_first_one(
    settings: Settings, amqp_url: str, namespace: str
) -> None:
    settings = settings.model_copy(update={"amqp_url": amqp_url, "namespace": namespace})
    # Given a fresh deployment: a worker's bus publishes a job's completion before any notifier has started
    publisher = rabbit_event_bus(settings)
    early = completed()
    publisher.publish(early)
    # When the first notifier starts
    handled: list[str] = []
    notifier_bus = RabbitEventBus(amqp_url, settings.events_exchange)
    subscription = notifier_bus.consume(
        settings.notifier_queue, lambda events: handled.extend(event.id for event in events), NOTIFIER_ROUTING_KEYS
    )
    try:
        # Then the completion was kept for it
        wait_for(lambda: handled == [early.id], "the early event handled")
    finally:
        subscription.close()
        notifier_bus.close()
        publisher.close()
