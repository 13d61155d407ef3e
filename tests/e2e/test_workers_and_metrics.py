"""Operations across real processes: a worker's own metrics endpoint, ``GET /workers`` seeing a worker come and a
SIGKILLed one go, and a worker over its RSS ceiling exiting to be restarted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from engineroom.actors.presence import RECYCLE_EXIT_CODE
from tests.e2e.conftest import listed_workers
from tests.ports import free_port

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

TokenFor = Callable[..., str]
#: Heartbeats every second (a third of the lease), so a killed worker drops out of the list within ~3 s.
FAST = {"ENGINEROOM_SCHEDULER_INTERVAL_S": "0.1", "ENGINEROOM_JOB_LEASE_S": "3"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.TransportError:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_worker_serves_job_metrics_and_is_listed_until_it_is_killed(stack: Stack, token_for: TokenFor) -> None:
    # Given a gateway, a scheduler and one worker command serving its metrics on a port of its own
    stack.env.update(FAST)
    base_url = stack.start_api()
    stack.start_scheduler()
    metrics_port = free_port()
    worker = stack.start(
        "worker",
        *("worker", "--engines", "general", "--processes", "1", "--threads", "4", "--no-notifications"),
        new_session=True,
        env={"ENGINEROOM_WORKER_METRICS_PORT": str(metrics_port), "ENGINEROOM_WORKER_METRICS_HOST": "127.0.0.1"},
    )
    admin = token_for("root", "acme", admin=True)
    # Then GET /workers lists it with its engines and threads
    (listed,) = wait_for(lambda: listed_workers(base_url, admin), "the worker to be listed")
    assert listed["engines"] == ["general"] and listed["threads"] == 4
    assert listed["backpressure"]["paused"] is False and listed["backpressure"]["rss_mb"] > 0
    # When it runs three jobs
    body = {"task": "general.demo", "payload": {"duration_s": 0.1, "steps": 1}}
    ids = [httpx.post(f"{base_url}/jobs", json=body, headers=auth(admin)).json()["id"] for _ in range(3)]

    def all_completed() -> bool:
        states = [httpx.get(f"{base_url}/jobs/{job_id}", headers=auth(admin)).json()["state"] for job_id in ids]
        return all(state == "completed" for state in states)

    wait_for(all_completed, "the jobs to complete")
    # Then its own metrics endpoint shows them, next to Dramatiq's message metrics
    job = frozenset({"engine": "general", "task": "general.demo"}.items())
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    samples = wait_for(lambda: scrape(url), "the worker's metrics endpoint")
    assert samples[("engineroom_jobs_finished_total", job | {("state", "completed")})] == 3
    assert samples[("engineroom_job_duration_seconds_count", job)] == 3
    assert samples[("engineroom_job_duration_seconds_sum", job)] >= 0.3
    assert samples[("engineroom_events_published_total", frozenset({("type", "job.completed")}))] == 3
    assert any(name == "dramatiq_messages_total" for name, _labels in samples)
    # When the worker is SIGKILLed (no chance to delete its document)
    worker.kill_group()
    # Then it drops out of the list once its heartbeat lapses
    wait_for(lambda: listed_workers(base_url, admin) == [], "the killed worker to drop out", timeout_s=15)


def test_a_worker_past_its_rss_ceiling_stops_with_the_recycle_code(stack: Stack) -> None:
    # Given a worker whose RSS ceiling is below what any Python process uses
    stack.env.update(FAST)
    worker = stack.start(
        "worker",
        *("worker", "--engines", "general", "--processes", "1", "--threads", "2", "--no-notifications"),
        new_session=True,
        env={"ENGINEROOM_WORKER_MAX_RSS_MB": "1"},
    )
    # Then, with no job to finish, it stops itself gracefully and the command exits with the recycle code
    assert worker.popen.wait(timeout=60) == RECYCLE_EXIT_CODE, worker.log()
    assert "recycling this worker process" in worker.log()
