"""Job messages reach RabbitMQ or the enqueue raises: the outbox flag is cleared only for messages that exist."""

from __future__ import annotations

import pika

from engineroom.core.config import Settings
from engineroom.messaging.broker import build_broker, job_message
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
