"""``engineroom reconcile``: the scheduler's repair for a broker that lost its messages (``scheduler/reconcile.py``),
run by hand for chosen engines, whatever their queues say: the operator knows RabbitMQ lost them (restored from an
old backup, a queue deleted). Talks to MongoDB and RabbitMQ directly, with the deployment's own settings."""

from __future__ import annotations

from dataclasses import dataclass

from engineroom.core.config import Settings
from engineroom.messaging.broker import Enqueuer, QueueProbe, build_broker
from engineroom.scheduler.resend import resend_all
from engineroom.services.dispatch import Dispatcher
from engineroom.store.client import connect
from engineroom.store.jobs import JobStore


@dataclass(frozen=True)
class EngineReconciled:
    """What MongoDB and RabbitMQ held for one engine, and how many jobs were sent again."""

    engine: str
    #: Jobs MongoDB holds as ``queued`` whose message should be in RabbitMQ (parked ones excepted).
    expected: int
    #: The engine's queue before anything was sent (``None``: RabbitMQ could not say).
    queue: QueueProbe | None
    resent: int


async def reconcile_engines(settings: Settings, engines: list[str], *, dry_run: bool) -> list[EngineReconciled]:
    """Send again, engine by engine and in the order they should start, the messages of every job MongoDB holds as
    queued in RabbitMQ; with ``dry_run``, only count them and look at the queues (without declaring them).

    Raises:
      BrokerUnavailable: RabbitMQ did not take them all (those sent stay sent; running again is safe).
      StoreUnavailable: MongoDB failed.
    """
    client = connect(settings)
    enqueuer = Enqueuer(build_broker(settings), settings)
    jobs = JobStore(client[settings.mongodb_db])
    dispatcher = Dispatcher(jobs, enqueuer)
    reports = []
    try:
        for engine in engines:
            expected = await jobs.count_expected_in_broker(engine)
            queue = await enqueuer.probe(engine)
            resent = 0
            if not dry_run:
                await enqueuer.declare(engine)
                resent = await resend_all(jobs, dispatcher, engine)
            reports.append(EngineReconciled(engine, expected, queue, resent))
    finally:
        await dispatcher.close()
        enqueuer.close()
        enqueuer.broker.close()
        client.close()
    return reports
