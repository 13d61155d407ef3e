"""Publishing events from async code (the gateway, the scheduler) without blocking the event loop."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from engineroom.core.errors import EngineroomError
from engineroom.core.metrics import count_published
from engineroom.messaging.bus import EventBus
from engineroom.models.event import Event
from engineroom.store.events import EventStore

logger = logging.getLogger(__name__)


def publish_or_log(bus: EventBus, event: Event) -> None:
    """Publish one event (from the calling thread); a lost event is logged, never raised: the job document is the
    truth, and the event stays recorded for sockets that resume."""
    try:
        bus.publish(event)
    except EngineroomError:
        logger.exception("event %s for job %s was not published", event.type, event.job_id)
        return
    count_published(event.type)


class AsyncEventPublisher:
    """Records each event for replay, then publishes it. One thread does every publish of this process: pika
    connections are per thread and not thread-safe."""

    def __init__(self, bus: EventBus, events: EventStore) -> None:
        self.bus = bus
        self.events = events
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engineroom-events")

    async def publish(self, event: Event) -> None:
        """Announce an event; a lost event is logged, never raised (the job document is the truth).

        Recorded first: a socket resuming from the store then never misses an event it could not hear live.
        """
        await self.publish_many([event])

    async def publish_many(self, events: list[Event]) -> None:
        """Announce events in order: recorded together (one group write), then published by one thread hop."""
        outcomes = await asyncio.gather(*(self.events.record(event) for event in events), return_exceptions=True)
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, EngineroomError):
                logger.error("event %s for job %s was not recorded for replay: %r", event.type, event.job_id, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        await self.publish_recorded(events)

    async def publish_recorded(self, events: list[Event]) -> None:
        """Announce events their caller recorded already, in the write that made them true (a notification and
        its ``notification.created``), so recording them again would only cost a round trip."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._publish_all, events)

    def _publish_all(self, events: list[Event]) -> None:
        for event in events:
            publish_or_log(self.bus, event)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
