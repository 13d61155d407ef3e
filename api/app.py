"""``create_app``: the gateway, with its clients built and closed in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from dramatiq import Broker
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from engineroom import __version__
from engineroom.api import ws
from engineroom.api.errors import ERROR_RESPONSES, install_error_handlers
from engineroom.api.limits import BodySizeLimit
from engineroom.api.metrics import HttpMetrics
from engineroom.api.metrics import router as metrics_router
from engineroom.api.queues import QueueControl
from engineroom.api.rate_limits import SubmitRateLimiter
from engineroom.api.routes import (
    artifacts,
    dashboard,
    health,
    jobs,
    notifications,
    status,
    tasks,
    usage,
    workers,
    workflows,
)
from engineroom.api.routes import queues as queue_routes
from engineroom.api.routes import schedules as schedule_routes
from engineroom.api.status import PipelineReport
from engineroom.artifacts.factory import build_artifact_store
from engineroom.core.config import Settings, get_settings
from engineroom.core.shutdown import SHUTDOWN_DB_BUDGET_S
from engineroom.messaging.broker import Enqueuer, build_broker
from engineroom.messaging.bus import EventBus, rabbit_event_bus
from engineroom.notifications.preference_cache import PreferenceCache
from engineroom.notifications.websocket import Hub
from engineroom.services.control import JobControl
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.services.registry import load_task_modules
from engineroom.services.schedules import ScheduleControl
from engineroom.services.submission import JobSubmitter
from engineroom.services.workflows import WorkflowService
from engineroom.store.client import Database, bounded, connect, ensure_indexes
from engineroom.store.events import EventStore
from engineroom.store.jobs import JobStore
from engineroom.store.notifications import NotificationStore
from engineroom.store.preferences import PreferenceStore
from engineroom.store.queues import QueueStore
from engineroom.store.rate_limits import RateCounters
from engineroom.store.schedules import ScheduleStore
from engineroom.store.stats import JobStats, UsageTotals
from engineroom.store.workers import WorkerStore
from engineroom.store.workflows import WorkflowStore

#: Browser assets shipped as package data (``engineroom.js``, the dashboard), served at ``/static``.
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: What runs on the gateway's loop for its lifetime, given its clients: ``engineroom dev`` and the tests' gateway
#: pass the scheduler and the notifier (``scheduler/companion.py``), which the gateway itself does not import.
Companion = Callable[
    [Settings, Database, EventBus, AsyncEventPublisher, Enqueuer, Dispatcher, PreferenceCache],
    AbstractAsyncContextManager[None],
]


def create_app(
    settings: Settings | None = None,
    *,
    broker: Broker | None = None,
    bus: EventBus | None = None,
    companion: Companion | None = None,
) -> FastAPI:
    """The gateway. ``broker`` and ``bus`` default to RabbitMQ; ``engineroom dev`` and tests pass in-process
    ones, and may run the scheduler on the gateway's loop (``companion``) instead of as its own process."""
    settings = settings or get_settings()
    load_task_modules(settings.task_module_names)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect(settings)
        db = client[settings.mongodb_db]
        await ensure_indexes(db, retention_days=settings.retention_days, index_set=settings.mongodb_indexes)
        queues = QueueStore(db, rate_window_s=settings.rate_window_s)
        await queues.ensure_defaults()
        events = bus or rabbit_event_bus(settings)
        event_store = EventStore(db, ttl_s=settings.events_ttl_s)
        publisher = AsyncEventPublisher(events, event_store)
        enqueuer = Enqueuer(broker or build_broker(settings), settings)
        jobs_store = JobStore(db)
        dispatcher = Dispatcher(jobs_store, enqueuer)
        hub = Hub(asyncio.get_running_loop(), buffer_frames=settings.ws_send_buffer)
        subscription = events.subscribe(hub.deliver_threadsafe)
        app.state.db = db
        app.state.artifacts = build_artifact_store(settings, db)
        await app.state.artifacts.prepare()
        app.state.jobs = jobs_store
        app.state.enqueuer = enqueuer
        app.state.hub = hub
        app.state.rate_limiter = SubmitRateLimiter(
            RateCounters(db),
            per_user=settings.rate_limit_per_minute,
            per_tenant=settings.tenant_rate_limit_per_minute,
            window_s=settings.rate_window_s,
        )
        app.state.events = event_store
        app.state.workflow_store = WorkflowStore(db)
        app.state.submitter = JobSubmitter(jobs_store, dispatcher, publisher)
        app.state.control = JobControl(jobs_store, dispatcher, publisher)
        app.state.queues = queues
        app.state.stats = JobStats(db)
        app.state.queue_control = QueueControl(queues, app.state.stats, enqueuer, publisher)
        app.state.workers = WorkerStore(db, stale_after_s=settings.job_lease_s)
        app.state.usage_totals = UsageTotals(db)
        app.state.pipeline_report = PipelineReport(app.state.stats, app.state.queue_control)
        app.state.workflows = WorkflowService(
            app.state.workflow_store, jobs_store, app.state.submitter, app.state.control, publisher
        )
        app.state.schedules = ScheduleStore(db)
        app.state.schedule_control = ScheduleControl(app.state.schedules)
        app.state.notifications = NotificationStore(db)
        app.state.preferences = PreferenceStore(db)
        # Shared with this process's notifier, if it runs one, so that a PUT here is seen by its next event.
        app.state.preference_cache = PreferenceCache.from_settings(app.state.preferences, settings)
        companions = contextlib.AsyncExitStack()
        if companion is not None:
            preferences = app.state.preference_cache
            await companions.enter_async_context(
                companion(settings, db, events, publisher, enqueuer, dispatcher, preferences)
            )
        try:
            yield
        finally:
            with bounded(SHUTDOWN_DB_BUDGET_S):  # MongoDB may be gone: stopping must not wait on it
                await companions.aclose()
                subscription.close()
                await dispatcher.close()
                publisher.close()
                enqueuer.close()
                if bus is None:
                    events.close()
                await app.state.artifacts.close()
                client.close()

    app = FastAPI(title="engineroom", version=__version__, lifespan=lifespan, responses=ERROR_RESPONSES)
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_payload_bytes)
    app.add_middleware(HttpMetrics)  # added last, so outermost: it sees every answer, the 413s too
    install_error_handlers(app)
    routers = (
        jobs.router,
        artifacts.router,
        queue_routes.router,
        workflows.router,
        schedule_routes.router,
        notifications.router,
        tasks.router,
        status.router,
        usage.router,
        workers.router,
    )
    for router in (*routers, health.router, metrics_router, ws.router, dashboard.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
