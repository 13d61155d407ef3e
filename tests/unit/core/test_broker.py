"""Job messages reach RabbitMQ or the enqueue raises: the outbox flag is cleared only for messages that exist."""

from __future__ import annotations

import pika
from dramatiq import Message

from engineroom.core.broker import Enqueuer, build_broker, job_message
from engineroom.core.config import Settings
from tests.unit.store.test_jobs import make_job


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
