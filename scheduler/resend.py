"""Sending again the messages of jobs MongoDB holds as ``queued`` in RabbitMQ, in the order they should start: the
repair for a broker that lost them (``engineroom reconcile`` and the scheduler's ``scheduler/reconcile.py``).

A walk goes over an engine's jobs expected in RabbitMQ one priority at a time, highest first and oldest first within
one, in bounded batches (``JobStore.expected_in_broker``): RabbitMQ's priority queue receives them in the order they
should start, and no query reads more than a batch. Parked jobs are not sent: they wait in MongoDB on purpose. A job
sent twice is harmless: a worker runs only a ``queued`` job, and the engine's slot admits one holder per job id.
"""

from __future__ import annotations

from dataclasses import dataclass

from engineroom.core.errors import BrokerUnavailable
from engineroom.models.job import PRIORITIES_HIGHEST_FIRST
from engineroom.services.dispatch import Dispatcher
from engineroom.store.jobs import JobStore

#: Jobs one batch of a walk reads and sends at most.
RESEND_BATCH = 200


@dataclass(frozen=True)
class LinePosition:
    """Where a walk over an engine's jobs stands: the priority it is at, and the last job id of it sent."""

    priority: int = PRIORITIES_HIGHEST_FIRST[0]
    after: str | None = None


async def resend_batch(
    jobs: JobStore, dispatcher: Dispatcher, engine: str, position: LinePosition, *, limit: int = RESEND_BATCH
) -> tuple[int, LinePosition | None]:
    """Send up to ``limit`` jobs of the walk from ``position``: how many were sent, and where the walk goes on
    (``None`` once every priority is done).

    Raises:
      BrokerUnavailable: RabbitMQ did not take them all; walking again from ``position`` is safe.
      StoreUnavailable: MongoDB failed.
    """
    sent, priority, after = 0, position.priority, position.after
    while sent < limit:
        wanted = limit - sent
        batch = await jobs.expected_in_broker(engine, priority, after, wanted)
        if batch:
            if await dispatcher.dispatch_many(batch) < len(batch):
                raise BrokerUnavailable()
            sent, after = sent + len(batch), batch[-1].id
        if len(batch) < wanted:  # this priority is done
            if priority == PRIORITIES_HIGHEST_FIRST[-1]:
                return sent, None
            priority, after = priority - 1, None
    return sent, LinePosition(priority, after)


async def resend_all(jobs: JobStore, dispatcher: Dispatcher, engine: str) -> int:
    """Send every job of the engine expected in RabbitMQ, in the order they should start; how many were sent.

    Raises:
      BrokerUnavailable: RabbitMQ did not take them all (those sent stay sent).
      StoreUnavailable: MongoDB failed.
    """
    total = 0
    position: LinePosition | None = LinePosition()
    while position is not None:
        sent, position = await resend_batch(jobs, dispatcher, engine, position)
        total += sent
    return total
