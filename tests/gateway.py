"""The in-process gateway the API tests run against: the real app, a StubBroker worker on two threads and an
in-process event bus, over a real SecantusDB. Function-scoped tests (``tests/unit/api``) and module-scoped fuzz
and security runs build it the same way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from engineroom.actors.delivery import Deliverer, declare_delivery_actors
from engineroom.actors.engines import declare_engine_actors
from engineroom.actors.runner import JobRunner
from engineroom.api.app import create_app
from engineroom.core.config import Settings
from engineroom.messaging.broker import build_broker, start_in_process_worker
from engineroom.messaging.bus import LocalEventBus
from engineroom.scheduler.companion import scheduler_and_notifier
from tests.settings import make_settings

#: Retries, scheduler ticks, leases, rate windows and notification deliveries timed for tests.
FAST_SETTINGS = {
    "retry_backoff_base_s": 0.05,
    "scheduler_interval_s": 0.05,
    "job_lease_s": 10.0,
    "rate_window_s": 2.0,
    "delivery_min_backoff_s": 0.2,
    "delivery_max_backoff_s": 0.5,
    "delivery_max_retries": 2,
}


def gateway_settings(settings: Settings, mongodb_url: str, **overrides: object) -> Settings:
    """``settings`` pointed at ``mongodb_url``, with a 64 KiB body limit and the fast timings."""
    update = {"mongodb_url": mongodb_url, "max_payload_bytes": 64 * 1024, **FAST_SETTINGS, **overrides}
    return settings.model_copy(update=update)


def own_database_settings(prefix: str, mongodb_url: str, **overrides: object) -> Settings:
    """Test settings with a database of their own (named ``<prefix>_<random>``), for module-scoped gateways."""
    base = make_settings(mongodb_db=f"{prefix}_{uuid.uuid4().hex[:12]}", namespace=f"{prefix}.")
    return gateway_settings(base, mongodb_url, **overrides)


@contextmanager
def in_process_gateway(settings: Settings) -> Iterator[TestClient]:
    """A gateway (with the scheduler and notifier on its loop) whose jobs and notification deliveries run on two
    in-process worker threads."""
    broker = build_broker(settings, in_process=True)
    bus = LocalEventBus()
    declare_engine_actors(broker, settings, JobRunner(settings, bus, broker))
    declare_delivery_actors(broker, settings, Deliverer(settings))
    worker = start_in_process_worker(broker, threads=2, worker_timeout_ms=50)
    try:
        with TestClient(create_app(settings, broker=broker, bus=bus, companion=scheduler_and_notifier)) as test_client:
            yield test_client
    finally:
        worker.stop()
        broker.close()
