"""``engineroom dev``: gateway, workers for every engine and (when needed) an embedded database in one command."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType

import uvicorn

from engineroom.actors.delivery import Deliverer, declare_delivery_actors
from engineroom.actors.engines import declare_engine_actors
from engineroom.actors.runner import JobRunner
from engineroom.api.app import create_app
from engineroom.core.config import Settings, get_settings
from engineroom.core.embedded import EmbeddedDatabase, is_rabbitmq_reachable
from engineroom.messaging.broker import build_broker, start_in_process_worker
from engineroom.messaging.bus import EventBus, LocalEventBus, rabbit_event_bus
from engineroom.scheduler.companion import scheduler_and_notifier
from engineroom.services.registry import load_task_modules
from engineroom.services.tokens import issue_token

logger = logging.getLogger(__name__)


def _exit_cleanly(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def run_dev(*, host: str, port: int, data_dir: Path, threads: int) -> int:
    """Run until Ctrl-C or SIGTERM, then stop the worker and the embedded database."""
    # uvicorn re-raises the SIGTERM it caught once it has shut down; the default action would kill this process
    # before the ``finally`` below stops the worker and the database. Exiting through SystemExit runs it.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    database: EmbeddedDatabase | None = None
    try:
        if "ENGINEROOM_MONGODB_URL" not in os.environ:
            database = EmbeddedDatabase(data_dir / "mongo").start()
            os.environ["ENGINEROOM_MONGODB_URL"] = database.url
            logger.info("embedded SecantusDB on %s (data in %s)", database.url, data_dir / "mongo")
        get_settings.cache_clear()
        _serve(get_settings(), host=host, port=port, threads=threads)
    finally:
        if database is not None:
            database.stop()
    return 0


def _serve(settings: Settings, *, host: str, port: int, threads: int) -> None:
    """Workers for every engine and for notification deliveries on threads of this process, and the gateway in
    front, until it stops."""
    in_process = not is_rabbitmq_reachable(settings.amqp_url)
    if in_process:
        logger.warning(
            "!!! RabbitMQ is not reachable at %s: using an IN-PROCESS broker. Jobs live in this process's memory "
            "and are lost when it stops; start RabbitMQ for anything but a quick look. !!!",
            settings.amqp_url,
        )
    load_task_modules(settings.task_module_names)
    broker = build_broker(settings, in_process=in_process)
    bus: EventBus = LocalEventBus() if in_process else rabbit_event_bus(settings)
    declare_engine_actors(broker, settings, JobRunner(settings, bus, broker))
    declare_delivery_actors(broker, settings, Deliverer(settings))
    worker = start_in_process_worker(broker, threads=threads)
    token = issue_token(settings, user_id="admin", tenant_id="default", admin=True, ttl_s=30 * 86400)
    print(f"\nengineroom dev is up: http://{host}:{port}  (API docs: http://{host}:{port}/docs)")  # noqa: T201
    print(f"admin token (tenant 'default'): {token}", flush=True)  # noqa: T201
    print(f"dashboard, signed in: http://{host}:{port}/?token={token}\n", flush=True)  # noqa: T201
    try:
        uvicorn.run(
            create_app(settings, broker=broker, bus=bus, companion=scheduler_and_notifier),
            host=host,
            port=port,
            log_level="info",
        )
    finally:
        worker.stop()
        bus.close()
        broker.close()
