"""``engineroom scheduler``: the scheduler as a process of its own, with its own clients."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from engineroom.core.config import Settings
from engineroom.core.shutdown import EXIT_MARGIN_S, SHUTDOWN_DB_BUDGET_S, ExitDeadline
from engineroom.messaging.broker import Enqueuer, build_broker
from engineroom.messaging.bus import rabbit_event_bus
from engineroom.notifications.notifier import start_notifier
from engineroom.scheduler.loop import run_scheduler
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.services.registry import load_task_modules
from engineroom.store.client import bounded, connect, ensure_indexes
from engineroom.store.events import EventStore
from engineroom.store.jobs import JobStore
from engineroom.store.queues import QueueStore


async def serve_scheduler(settings: Settings, deadline: ExitDeadline, *, grace_s: float) -> None:
    """Run the scheduler and the notifier until SIGINT or SIGTERM, then resign leadership and close every client;
    ``deadline`` ends the process if that takes longer than ``grace_s`` plus ``EXIT_MARGIN_S``."""
    load_task_modules(settings.task_module_names)  # cron schedules submit jobs, checked against their tasks
    client = connect(settings)
    db = client[settings.mongodb_db]
    await ensure_indexes(db, retention_days=settings.retention_days, index_set=settings.mongodb_indexes)
    await QueueStore(db, rate_window_s=settings.rate_window_s).ensure_defaults()
    bus = rabbit_event_bus(settings)
    publisher = AsyncEventPublisher(bus, EventStore(db, ttl_s=settings.events_ttl_s))
    enqueuer = Enqueuer(build_broker(settings), settings)
    dispatcher = Dispatcher(JobStore(db), enqueuer)
    loop = asyncio.get_running_loop()
    scheduler = asyncio.create_task(run_scheduler(settings, db, dispatcher, publisher))
    notifier = start_notifier(settings, db, bus, publisher, enqueuer)

    def stop() -> None:
        deadline.arm(grace_s + EXIT_MARGIN_S, f"its {grace_s:g} s grace and the {EXIT_MARGIN_S:g} s margin ran out")
        scheduler.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler
    finally:
        with bounded(SHUTDOWN_DB_BUDGET_S):  # MongoDB may be gone: stopping must not wait on it
            await asyncio.to_thread(notifier.close)  # off the loop: it waits for the event in flight
            await dispatcher.close()
            publisher.close()
            enqueuer.close()
            bus.close()
            client.close()
