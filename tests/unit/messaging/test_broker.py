"""Job messages reach RabbitMQ or the enqueue raises: the outbox flag is cleared only for messages that exist."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pika
import pytest
from dramatiq import Message

from engineroom.core.config import Settings
from engineroom.core.embedded import free_port
from engineroom.core.errors import BrokerUnavailable
from engineroom.messaging.broker import Enqueuer, build_broker, job_message
from tests.parallel import close_connections_on_own_vhost
from tests.unit.store.test_jobs import make_job


@pytest.fixture
def rabbit_settings(settings: Settings, amqp_url: str, namespace: str) -> Settings:
    return settings.model_copy(update={"amqp_url": amqp_url, "namespace": namespace})


@pytest.fixture
def enqueuer(rabbit_settings: Settings) -> Iterator[Enqueuer]:
    """An enqueuer on the real RabbitMQ, under this test's namespace."""
    made = Enqueuer(build_broker(rabbit_settings), rabbit_settings)
    yield made
    made.close()
    made.broker.close()


def test_a_job_message_sent_after_its_queue_was_deleted_is_not_dropped(
    settings: Settings, amqp_url: str, namespace: str
) -> None:
    settings = settings.model_copy(update={"amqp_url": amqp_url, "namespace": namespace})
    queue = settings.queue_name("general")
    broker = build_broker(settings)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        broker.enqueue(job_message(settings, make_job()))
        channel = connection.channel()
        channel.queue_delete(queue)  # an operator's mistake, or a queue lost with a RabbitMQ node
        # RabbitMQ drops a message routed to no queue and, unless asked to confirm, says nothing: the job's outbox
        # flag would be cleared for a message that never existed.
        broker.enqueue(job_message(settings, make_job()))
        assert channel.queue_declare(queue, passive=True).method.message_count == 1
    finally:
        connection.close()
        broker.close()


async def test_an_unreachable_rabbitmq_is_unavailable_and_has_no_depth(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"amqp_url": f"amqp://guest:guest@127.0.0.1:{free_port('127.0.0.1')}/%2F"})
    enqueuer = Enqueuer(build_broker(settings), settings)
    try:
        with pytest.raises(BrokerUnavailable) as raised:
            await enqueuer.ping()
        assert isinstance(raised.value.__cause__, pika.exceptions.AMQPConnectionError)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="engineroom.messaging.broker"):
            assert await enqueuer.depth("general") is None
        (record,) = [record for record in caplog.records if record.name == "engineroom.messaging.broker"]
        assert record.levelno == logging.WARNING and record.exc_info is None  # expected: no traceback
    finally:
        enqueuer.close()
        enqueuer.broker.close()


async def test_a_connection_rabbitmq_closed_is_replaced_before_a_depth_is_given_up(
    enqueuer: Enqueuer, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a gateway that read a depth once, then RabbitMQ closed its idle connection
    assert await enqueuer.depth("general") == 0
    if not close_connections_on_own_vhost(amqp_url):
        pytest.skip("needs a RabbitMQ vhost of this test process's own (run under pytest-xdist)")
    # When the next depth is asked for
    with caplog.at_level(logging.WARNING, logger="engineroom.messaging.broker"):
        depth = await enqueuer.depth("general")
    # Then it is read on a new connection, not given up with a warning
    assert depth == 0
    assert [record for record in caplog.records if record.name == "engineroom.messaging.broker"] == []


async def test_a_broker_failure_that_is_not_about_reaching_it_keeps_its_traceback(
    settings: Settings, amqp_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"amqp_url": amqp_url, "namespace": namespace})
    queue = settings.queue_name("general")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    enqueuer = Enqueuer(build_broker(settings), settings)
    try:
        # Someone made the queue without its priority argument: RabbitMQ refuses Dramatiq's declare (406)
        connection.channel().queue_declare(queue, durable=True)
        with caplog.at_level(logging.WARNING, logger="engineroom.messaging.broker"):
            assert await enqueuer.depth("general") is None
        (record,) = [record for record in caplog.records if record.name == "engineroom.messaging.broker"]
        assert record.levelno == logging.ERROR and record.exc_info is not None
    finally:
        connection.channel().queue_delete(queue)
        connection.close()
        enqueuer.close()
        enqueuer.broker.close()


async def test_a_readiness_check_lets_a_fault_that_is_not_about_reaching_rabbitmq_through(
    enqueuer: Enqueuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def a_bug() -> None:
        raise AttributeError("a bug, not an outage")

    monkeypatch.setattr(enqueuer, "_touch_connection", a_bug)
    with pytest.raises(AttributeError):
        await enqueuer.ping()


async def test_a_batch_reaches_rabbitmq_whole_in_order_with_its_priorities_even_after_its_queue_was_deleted(
    settings: Settings, amqp_url: str, namespace: str
) -> None:
    settings = settings.model_copy(update={"amqp_url": amqp_url, "namespace": namespace})
    queue = settings.queue_name("general")
    broker = build_broker(settings)
    enqueuer = Enqueuer(broker, settings)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        first = [make_job(priority=5) for _ in range(20)]
        assert await enqueuer.enqueue_many(first) == [job.id for job in first]  # one transaction
        channel = connection.channel()
        channel.queue_delete(queue)
        # A batch routed to no queue comes back; it goes again one by one, Dramatiq declaring the queue anew
        second = [make_job(priority=5) for _ in range(10)] + [make_job(priority=9)]
        assert await enqueuer.enqueue_many(second) == [job.id for job in second]
        third = [make_job(priority=5) for _ in range(5)]
        assert await enqueuer.enqueue_many(third) == [job.id for job in third]
        received = []
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            method, properties, body = got
            assert properties.delivery_mode == 2  # persistent
            received.append(Message.decode(body).args[0])
        assert received == [second[-1].id] + [job.id for job in second[:-1] + third]  # priority, then arrival
    finally:
        connection.close()
        enqueuer.close()
        broker.close()


async def test_probing_a_queue_rabbitmq_lacks_says_so_without_a_warning_from_pika(
    enqueuer: Enqueuer, caplog: pytest.LogCaptureFixture
) -> None:
    # The scheduler probes every engine's queue at start: pika logged RabbitMQ's 404 for each one not yet declared.
    with caplog.at_level(logging.WARNING):
        probe = await enqueuer.probe("discovery_analytics")
    assert probe is not None and not probe.exists
    assert [record.getMessage() for record in caplog.records] == []
