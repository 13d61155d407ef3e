"""Submit rate limits through the gateway: per user and per tenant, 429 with a Retry-After that holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from engineroom.actors.engines import declare_engine_actors
from engineroom.actors.runner import JobRunner
from engineroom.api.app import create_app
from engineroom.core.config import Settings
from engineroom.messaging.broker import build_broker
from engineroom.messaging.bus import LocalEventBus
from tests.unit.api.test_jobs import TokenFor, auth

JOB = {"task": "general.demo", "payload": {"duration_s": 0}}
WINDOW_S = 4.0


@pytest.fixture
def limited(app_settings: Settings) -> Iterator[TestClient]:
    """A gateway allowing 3 submits per user and 5 per tenant in each 4-second window (nothing runs them)."""
    limits = {"rate_limit_per_minute": 3, "tenant_rate_limit_per_minute": 5, "rate_window_s": WINDOW_S}
    settings = app_settings.model_copy(update=limits)
    broker = build_broker(settings, in_process=True)
    bus = LocalEventBus()
    declare_engine_actors(broker, settings, JobRunner(settings, bus, broker))
    with TestClient(create_app(settings, broker=broker, bus=bus)) as client:
        yield client
    broker.close()


def wait_for_a_fresh_window() -> None:
    """Start at the beginning of a window, so the test's submits all fall in one."""
    into_window = datetime.now(UTC).timestamp() % WINDOW_S
    if into_window > 0.5:
        time.sleep(WINDOW_S - into_window + 0.05)


def test_a_user_over_the_limit_gets_429_with_retry_after_and_may_submit_after_it(
    limited: TestClient, token_for: TokenFor
) -> None:
    alice = auth(token_for("alice", "acme"))
    wait_for_a_fresh_window()
    assert [limited.post("/jobs", json=JOB, headers=alice).status_code for _ in range(3)] == [202] * 3
    refused = limited.post("/jobs", json=JOB, headers=alice)
    assert refused.status_code == 429 and "user submit limit of 3" in refused.json()["detail"]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_S
    time.sleep(retry_after)
    assert limited.post("/jobs", json=JOB, headers=alice).status_code == 202


def test_the_tenant_limit_binds_users_together_and_a_batch_counts_each_job(
    limited: TestClient, token_for: TokenFor
) -> None:
    alice, bob, other = (auth(token_for(user, tenant)) for user, tenant in (("a", "t1"), ("b", "t1"), ("c", "t2")))
    wait_for_a_fresh_window()
    assert limited.post("/jobs/batch", json={"jobs": [JOB] * 3}, headers=alice).status_code == 202
    assert limited.post("/jobs/batch", json={"jobs": [JOB] * 2}, headers=bob).status_code == 202
    refused = limited.post("/jobs", json=JOB, headers=bob)
    assert refused.status_code == 429 and "tenant submit limit of 5" in refused.json()["detail"]
    assert limited.post("/jobs", json=JOB, headers=other).status_code == 202  # another tenant is not affected
    too_big = limited.post("/jobs/batch", json={"jobs": [JOB] * 4}, headers=auth(token_for("d", "t3")))
    assert too_big.status_code == 429
