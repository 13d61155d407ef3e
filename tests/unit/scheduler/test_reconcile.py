"""The scheduler re-sends the jobs whose messages RabbitMQ lost, in the order they should start, and leaves a
healthy queue alone (real RabbitMQ and SecantusDB; each test has a queue namespace of its own)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from engineroom.core.clock import utcnow
from engineroom.core.config import Settings
from engineroom.core.ids import new_id
from engineroom.messaging.broker import Enqueuer, QueueProbe, build_broker, job_message
from engineroom.models.job import JobDocument, JobState
from engineroom.scheduler.reconcile import SUSPECT_CHECKS, BrokerWatch, Verdict, judge
from engineroom.scheduler.resend import LinePosition, resend_batch
from engineroom.services.dispatch import Dispatcher
from engineroom.store.client import Database
from engineroom.store.jobs import JobStore
from tests.unit.store.test_jobs import make_job

LONG_AGO = timedelta(minutes=5)


@pytest.mark.parametrize("probe", [QueueProbe(exists=False), QueueProbe(exists=True, ready=0, consumers=0)])
def test_a_missing_queue_or_an_empty_one_without_consumers_has_lost_its_overdue_jobs(probe: QueueProbe) -> None:
    assert judge(probe, has_overdue=True) is Verdict.LOST


def test_an_empty_queue_with_consumers_is_only_suspect_they_may_hold_the_messages() -> None:
    assert judge(QueueProbe(exists=True, ready=0, consumers=2), has_overdue=True) is Verdict.SUSPECT


@pytest.mark.parametrize(
    ("probe", "has_overdue"),
    [(QueueProbe(exists=True, ready=3), True), (QueueProbe(exists=False), False), (QueueProbe(exists=True), False)],
)
def test_a_queue_with_messages_or_with_nothing_overdue_is_healthy(probe: QueueProbe, has_overdue: bool) -> None:
    assert judge(probe, has_overdue=has_overdue) is Verdict.HEALTHY


@pytest.fixture
def rabbit(settings: Settings, amqp_url: str, namespace: str) -> Settings:
    """Settings for this test's own queues, checked at once and expecting messages of jobs queued 1 s ago."""
    return settings.model_copy(
        update={"amqp_url": amqp_url, "namespace": namespace, "broker_check_interval_s": 0.01, "dispatch_grace_s": 1.0}
    )


@pytest.fixture
async def dispatcher(rabbit: Settings, db: Database) -> AsyncIterator[Dispatcher]:
    enqueuer = Enqueuer(build_broker(rabbit), rabbit)
    dispatcher = Dispatcher(JobStore(db), enqueuer)
    yield dispatcher
    await dispatcher.close()
    enqueuer.close()
    enqueuer.broker.close()


@pytest.fixture
def channel(amqp_url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield connection.channel()
    connection.close()


async def _checks(watch: BrokerWatch, count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0.02)  # past the check interval
        await watch.tick()


def _drain(channel: BlockingChannel, queue: str) -> list[str]:
    """The job ids of the messages in the queue, in the order RabbitMQ delivers them."""
    ids: list[str] = []
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return ids
        ids.append(json.loads(body)["args"][0])


async def _store(jobs: JobStore, **fields: Any) -> JobDocument:
    """A job made and queued minutes ago; each one made a millisecond after the one stored before."""
    await asyncio.sleep(0.002)
    queued_at = utcnow() - LONG_AGO
    return await jobs.insert(make_job(id=new_id(int(queued_at.timestamp() * 1000)), queued_at=queued_at, **fields))


async def test_the_jobs_of_a_deleted_queue_are_sent_again_highest_priority_first_then_oldest(
    rabbit: Settings, db: Database, dispatcher: Dispatcher, channel: BlockingChannel
) -> None:
    jobs = JobStore(db)
    queue = rabbit.queue_name("general")
    # Given queued jobs whose messages were in a queue that was then deleted
    low, normal_old, normal_new, critical = [await _store(jobs, priority=p) for p in (0, 5, 5, 10)]
    await dispatcher.dispatch_many([low, normal_old])
    channel.queue_delete(queue)
    # and jobs that must not be sent: one parked (it waits in MongoDB), one running
    await _store(jobs, priority=10, parked=True)
    await _store(jobs, priority=10, state=JobState.RUNNING)
    # When the scheduler's watch checks the queues
    await _checks(BrokerWatch(rabbit, jobs, dispatcher), 1)
    # Then the queue is back with each expected job once, in the order they should start
    assert _drain(channel, queue) == [critical.id, normal_old.id, normal_new.id, low.id]


async def test_the_jobs_of_a_purged_queue_without_consumers_are_sent_again(
    rabbit: Settings, db: Database, dispatcher: Dispatcher, channel: BlockingChannel
) -> None:
    jobs = JobStore(db)
    queue = rabbit.queue_name("general")
    waiting = [await _store(jobs) for _ in range(3)]
    await dispatcher.dispatch_many(waiting)
    channel.queue_purge(queue)
    await _checks(BrokerWatch(rabbit, jobs, dispatcher), 1)
    assert _drain(channel, queue) == [job.id for job in waiting]


async def test_a_queue_holding_messages_is_left_alone_and_one_missing_with_nothing_overdue_is_only_declared(
    rabbit: Settings, db: Database, dispatcher: Dispatcher, channel: BlockingChannel
) -> None:
    jobs = JobStore(db)
    queue = rabbit.queue_name("general")
    # Given an old job whose message is in the queue, and one of another engine queued a moment ago (no message yet)
    await dispatcher.dispatch_many([await _store(jobs)])
    await jobs.insert(make_job(engine="image_generation", queued_at=utcnow()))
    # When the watch checks, several times within a minute
    watch = BrokerWatch(rabbit.model_copy(update={"dispatch_grace_s": 60.0}), jobs, dispatcher)
    await _checks(watch, SUSPECT_CHECKS + 1)
    # Then nothing was sent again; the missing queue exists again (its workers wait for it), still empty
    assert len(_drain(channel, queue)) == 1
    assert channel.queue_declare(rabbit.queue_name("image_generation"), passive=True).method.message_count == 0


async def test_an_empty_queue_with_a_consumer_is_sent_again_only_once_it_stays_empty(
    rabbit: Settings, db: Database, dispatcher: Dispatcher, channel: BlockingChannel, amqp_url: str
) -> None:
    jobs = JobStore(db)
    queue = rabbit.queue_name("general")
    waiting = [await _store(jobs) for _ in range(3)]
    await dispatcher.enqueuer.send(job_message(rabbit, waiting[0]))  # declares the queue
    channel.queue_purge(queue)
    # Given a consumer that takes one message at a time and never acknowledges it (a busy worker)
    consumer = pika.BlockingConnection(pika.URLParameters(amqp_url))
    busy = consumer.channel()
    busy.basic_qos(prefetch_count=1)
    busy.basic_consume(queue, lambda *_: None)
    try:
        watch = BrokerWatch(rabbit, jobs, dispatcher)
        # When the queue stays empty for fewer checks than it takes to be sure
        await _checks(watch, SUSPECT_CHECKS - 1)
        # Then nothing is sent: the consumer might hold the messages
        assert channel.queue_declare(queue, passive=True).method.message_count == 0
        # And once it stayed empty long enough, the jobs are sent again (the consumer takes one of them)
        await _checks(watch, 1)
        assert channel.queue_declare(queue, passive=True).method.message_count == len(waiting) - 1
    finally:
        consumer.close()


async def test_a_walk_in_small_batches_sends_every_job_once_in_the_order_they_should_start(
    rabbit: Settings, db: Database, dispatcher: Dispatcher, channel: BlockingChannel
) -> None:
    jobs = JobStore(db)
    stored = [await _store(jobs, priority=p) for p in (1, 9, 1, 4, 9, 4, 1)]
    await dispatcher.enqueuer.declare("general")
    position: LinePosition | None = LinePosition()
    while position is not None:
        _sent, position = await resend_batch(jobs, dispatcher, "general", position, limit=2)
    in_order = sorted(stored, key=lambda job: (-job.priority, job.id))
    assert _drain(channel, rabbit.queue_name("general")) == [job.id for job in in_order]
