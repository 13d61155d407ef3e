"""An in-process gateway and worker (StubBroker + in-process event bus) over a real SecantusDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engineroom.actors.delivery import Deliverer, declare_delivery_actors
from engineroom.actors.engines import declare_engine_actors
from engineroom.actors.runner import JobRunner
from engineroom.api.app import create_app
from engineroom.core.broker import build_broker, start_in_process_worker
from engineroom.core.config import Settings
from engineroom.notifications.bus import LocalEventBus


@pytest.fixture
def app_settings(settings: Settings, mongodb_url: str) -> Settings:
    fast = {
        "retry_backoff_base_s": 0.05,
        "scheduler_interval_s": 0.05,
        "job_lease_s": 10.0,
        "rate_window_s": 2.0,
        "delivery_min_backoff_s": 0.2,
        "delivery_max_backoff_s": 0.5,
        "delivery_max_retries": 2,
    }
    return settings.model_copy(update={"mongodb_url": mongodb_url, "max_payload_bytes": 64 * 1024, **fast})


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    """A gateway (with the scheduler and notifier on its loop) whose jobs and notification deliveries run on two
    in-process worker threads."""
    broker = build_broker(app_settings, in_process=True)
    bus = LocalEventBus()
    declare_engine_actors(broker, app_settings, JobRunner(app_settings, bus, broker))
    declare_delivery_actors(broker, app_settings, Deliverer(app_settings))
    worker = start_in_process_worker(broker, threads=2, worker_timeout_ms=50)
    try:
        with TestClient(create_app(app_settings, broker=broker, bus=bus, with_scheduler=True)) as test_client:
            yield test_client
    finally:
        worker.stop()
        broker.close()
