"""``engineroom scheduler``: the scheduler as a process of its own, with its own clients."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from engineroom.actors.registry import load_task_modules
from engineroom.core.broker import Enqueuer, build_broker
from engineroom.core.config import Settings
from engineroom.core.dispatch import Dispatcher
from engineroom.notifications.bus import rabbit_event_bus
from engineroom.notifications.notifier import start_notifier
from engineroom.notifications.publisher import AsyncEventPublisher
from engineroom.scheduler.loop import run_scheduler
from engineroom.store.client import connect, ensure_indexes
from engineroom.store.events import EventStore
from engineroom.store.jobs import JobStore
from engineroom.store.queues import QueueStore


async def serve_scheduler(settings: Settings) -> None:
    """Run the scheduler and the notifier until SIGINT or SIGTERM, then resign leadership and close every client."""
    load_task_modules(settings.task_module_names)  # cron schedules submit jobs, checked against their tasks
    client = connect(settings)
    db = client[settings.mongodb_db]
    await ensure_indexes(db, retention_days=settings.retention_days)
    await QueueStore(db, rate_window_s=settings.rate_window_s).ensure_defaults()
    bus = rabbit_event_bus(settings)
    publisher = AsyncEventPublisher(bus, EventStore(db, ttl_s=settings.events_ttl_s))
    enqueuer = Enqueuer(build_broker(settings), settings)
    dispatcher = Dispatcher(JobStore(db), enqueuer)
    loop = asyncio.get_running_loop()
    scheduler = asyncio.create_task(run_scheduler(settings, db, dispatcher, publisher))
    notifier = start_notifier(settings, db, bus, publisher, enqueuer)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, scheduler.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler
    finally:
        await asyncio.to_thread(notifier.close)  # off the loop: it waits for the event in flight
        await dispatcher.close()
        publisher.close()
        enqueuer.close()
        bus.close()
        client.close()
