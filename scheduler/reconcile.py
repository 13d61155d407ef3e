"""The scheduler's watch over RabbitMQ: when an engine's queue is missing, or empty while MongoDB has held jobs as
queued in it for a while, RabbitMQ lost their messages (a node replaced, a queue deleted or purged, a restore from an
old backup), and they are sent again (``scheduler/resend.py``) in the order they should start.

MongoDB is the source of truth, and a message sent twice is harmless; but each costs a worker a read, so a healthy
system must not trigger re-sends in bulk: see ``judge``.
"""

from __future__ import annotations

import enum
import logging
import time
from datetime import timedelta

from engineroom.core.clock import utcnow
from engineroom.core.config import ENGINES, Settings
from engineroom.core.errors import BrokerUnavailable
from engineroom.messaging.broker import QueueProbe
from engineroom.scheduler.resend import LinePosition, resend_batch
from engineroom.services.dispatch import Dispatcher
from engineroom.store.jobs import JobStore

logger = logging.getLogger(__name__)

#: Checks in a row that must find an engine's queue empty, with consumers, while jobs are overdue in it before
#: their messages count as lost (about a minute by default).
SUSPECT_CHECKS = 6
#: Overdue jobs looked at per priority when deciding whether any is (see ``JobStore.has_overdue_in_broker``).
OVERDUE_SCAN = 20


class Verdict(enum.Enum):
    #: RabbitMQ may hold every message MongoDB expects in it.
    HEALTHY = "healthy"
    #: The queue is empty but has consumers: they may hold the overdue jobs' messages, or RabbitMQ lost them.
    SUSPECT = "suspect"
    #: RabbitMQ cannot hold the overdue jobs' messages.
    LOST = "lost"


def judge(probe: QueueProbe, has_overdue: bool) -> Verdict:
    """What an engine's queue says of the jobs MongoDB has held as queued in it for longer than a message takes.

    AMQP tells the messages ready in a queue and its consumers, not the messages consumers hold unacknowledged: a
    worker's prefetched ones, and those of jobs starting (still ``queued`` in MongoDB for a moment, see
    ``actors/start_write.py``). A missing queue holds nothing, and in a queue without consumers every message is
    ready: overdue jobs there have lost their messages. An empty queue with consumers is only suspect: the scheduler
    re-sends once it stays so for ``SUSPECT_CHECKS`` checks, and then at most what consumers can hold is sent twice.
    """
    if not has_overdue or (probe.exists and probe.ready > 0):
        return Verdict.HEALTHY
    if not probe.exists or probe.consumers == 0:
        return Verdict.LOST
    return Verdict.SUSPECT


class BrokerWatch:
    """Checks every engine's queue each ``broker_check_interval_s`` and re-sends what RabbitMQ lost, a batch per
    engine per tick (a tick must stay short: the leader's lease is renewed between ticks)."""

    def __init__(self, settings: Settings, jobs: JobStore, dispatcher: Dispatcher) -> None:
        self.jobs = jobs
        self.dispatcher = dispatcher
        self.interval_s = settings.broker_check_interval_s
        #: A job queued more recently may have its message on the way (sent late by the outbox, at worst).
        self.grace_s = max(settings.broker_check_interval_s, settings.dispatch_grace_s)
        self._next_check_at = time.monotonic() + self.interval_s
        self._suspect_checks: dict[str, int] = {}
        self._resending: dict[str, LinePosition] = {}
        self._resent: dict[str, int] = {}

    async def tick(self) -> None:
        """Go on with the re-sends under way, then look at every other engine's queue if a check is due."""
        for engine, position in list(self._resending.items()):
            await self._resend_next(engine, position)
        if time.monotonic() < self._next_check_at:
            return
        self._next_check_at = time.monotonic() + self.interval_s
        for engine in ENGINES:
            if engine not in self._resending and not await self._check(engine):
                return  # RabbitMQ cannot say now (or this is the in-process broker, which loses nothing)

    async def _check(self, engine: str) -> bool:
        """Judge the engine's queue and start re-sending its jobs if RabbitMQ lost them; False if it cannot say."""
        probe = await self.dispatcher.enqueuer.probe(engine)
        if probe is None:
            return False
        has_overdue = False
        if not probe.exists or probe.ready == 0:  # else healthy: spare MongoDB the question
            queued_before = utcnow() - timedelta(seconds=self.grace_s)
            has_overdue = await self.jobs.has_overdue_in_broker(engine, queued_before, OVERDUE_SCAN)
        verdict = judge(probe, has_overdue)
        if verdict is Verdict.SUSPECT:
            self._suspect_checks[engine] = self._suspect_checks.get(engine, 0) + 1
            if self._suspect_checks[engine] < SUSPECT_CHECKS:
                return True
            verdict = Verdict.LOST  # empty that long: take them for lost; what consumers hold is sent twice
        self._suspect_checks.pop(engine, None)
        if not probe.exists:
            # Declared again even with nothing to send: workers consuming it wait for it (Dramatiq declares a
            # queue again only when a send finds none), and the next check finds it without a refused declare.
            try:
                await self.dispatcher.enqueuer.declare(engine)
            except BrokerUnavailable:
                return False
        if verdict is Verdict.LOST:
            state = "was missing" if not probe.exists else f"is empty with {probe.consumers} consumer(s)"
            logger.warning(
                "the RabbitMQ queue of %s %s while jobs wait queued in it: sending them again", engine, state
            )
            await self._resend_next(engine, LinePosition())
        return True

    async def _resend_next(self, engine: str, position: LinePosition) -> None:
        try:
            sent, following = await resend_batch(self.jobs, self.dispatcher, engine, position)
        except BrokerUnavailable:
            following, sent = None, 0  # RabbitMQ is down again: the next check judges anew
        self._resent[engine] = self._resent.get(engine, 0) + sent
        if following is not None:
            self._resending[engine] = following
            return
        self._resending.pop(engine, None)
        logger.warning("re-sent %d job(s) of %s that RabbitMQ had lost", self._resent.pop(engine), engine)
