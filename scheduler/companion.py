"""The scheduler and the notifier as a gateway's companion: ``engineroom dev`` and the tests' gateway run both on
the gateway's loop with its clients (``create_app(companion=...)``), where production runs ``engineroom scheduler``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from engineroom.core.config import Settings
from engineroom.messaging.broker import Enqueuer
from engineroom.messaging.bus import EventBus
from engineroom.notifications.notifier import start_notifier
from engineroom.notifications.preference_cache import PreferenceCache
from engineroom.scheduler.loop import run_scheduler
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.client import Database


@contextlib.asynccontextmanager
async def scheduler_and_notifier(
    settings: Settings,
    db: Database,
    bus: EventBus,
    publisher: AsyncEventPublisher,
    enqueuer: Enqueuer,
    dispatcher: Dispatcher,
    preferences: PreferenceCache,
) -> AsyncIterator[None]:
    """Run the scheduler and the notifier (the notifier runs where the scheduler runs) on the running loop until
    the block ends; ``preferences`` is the gateway's, so that a ``PUT`` there is seen by the notifier's next event."""
    scheduler_task = asyncio.create_task(run_scheduler(settings, db, dispatcher, publisher))
    notifier = start_notifier(settings, db, bus, publisher, enqueuer, preferences)
    try:
        yield
    finally:
        await asyncio.to_thread(notifier.close)  # off the loop: it waits for the event in flight
        scheduler_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler_task
