"""Faults over real processes: RabbitMQ restarted while jobs are submitted and run, and SecantusDB killed and
restarted. No job the API accepted (202) is lost or run to completion twice, the API says 503 (``/readyz``, and
submits while MongoDB is down) instead of failing, and every process reconnects by itself.

The RabbitMQ test stops the shared broker (``rabbitmqctl stop_app``) for a few seconds: other tests using it at
that moment would see the outage too, so it is kept short, always restarts it, and under xdist runs alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from engineroom.core.embedded import EmbeddedDatabase
from tests.e2e.test_operations import wait_for_readiness
from tests.e2e.test_reliability import (
    FAST_SETTINGS,
    Events,
    Job,
    TokenFor,
    auth,
    get_job,
    is_terminal,
    poll_job,
    submit,
)
from tests.ports import free_port

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

#: Seconds every accepted job may take to finish once the fault is over.
RECOVERY_TIMEOUT_S = 90.0
#: A job short enough that many run during the test, long enough that some are running when the fault hits.
QUICK_JOB: dict[str, object] = {"duration_s": 0.2, "steps": 2}


class Submitter:
    """Submits jobs one after another for a while and keeps what was answered."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token
        self.accepted: list[str] = []
        self.statuses: Counter[int] = Counter()

    async def submit_for(self, seconds: float, payload: dict[str, object] = QUICK_JOB) -> Counter[int]:
        """Submit every 50 ms for ``seconds``; returns the statuses of this stretch."""
        statuses: Counter[int] = Counter()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            response = await self.http.post(
                "/jobs", json={"task": "general.demo", "payload": payload}, headers=auth(self.token)
            )
            statuses[response.status_code] += 1
            if response.status_code == 202:
                self.accepted.append(response.json()["id"])
            await asyncio.sleep(0.05)
        self.statuses.update(statuses)
        return statuses

    async def finished(self) -> list[Job]:
        return [
            await poll_job(self.http, self.token, job_id, is_terminal, RECOVERY_TIMEOUT_S) for job_id in self.accepted
        ]


def completed_exactly_once(jobs: list[Job]) -> dict[str, list[str]]:
    """The jobs that did not complete, or completed more than once, with their histories."""
    return {
        job["id"]: [entry["state"] for entry in job["history"]]
        for job in jobs
        if job["state"] != "completed" or [entry["state"] for entry in job["history"]].count("completed") != 1
    }


def rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", command], check=True, capture_output=True, timeout=120)


@pytest.fixture
def fast(stack: Stack) -> Stack:
    stack.env.update(FAST_SETTINGS)
    return stack


@pytest.mark.alone  # other tests would see the outage
async def test_rabbitmq_restarted_under_load_loses_no_accepted_job_and_everything_reconnects(
    fast: Stack, token_for: TokenFor
) -> None:
    fast.start_worker("--engines", "general")
    fast.start_scheduler()
    base_url = fast.start_api()
    token = token_for()
    events = await Events.open(base_url, token)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        jobs = Submitter(http, token)
        await jobs.submit_for(1.5)
        # When RabbitMQ stops while jobs are queued and running, and submits go on
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, rabbitmqctl, "stop_app")
        try:
            checks = (await wait_for_readiness(http, 503))["checks"]
            during = await jobs.submit_for(2.0)
        finally:
            await loop.run_in_executor(None, rabbitmqctl, "start_app")
        # Then the gateway said so, and accepted submits meanwhile (they wait in the outbox)
        assert checks["rabbitmq"] != "ok" and checks["mongodb"] == "ok"
        assert set(during) <= {202, 503}, during
        # and once it is back, everything reconnects: the gateway is ready, new jobs run
        assert (await wait_for_readiness(http, 200, timeout_s=60))["checks"]["rabbitmq"] == "ok"
        await jobs.submit_for(1.0)
        stored = await jobs.finished()
        # and a socket opened before the outage hears a job that runs after it (the gateway's event subscription
        # reconnected too)
        probe = await submit(http, token, "general.demo", QUICK_JOB)
        try:
            await events.wait_for("job.completed", probe["id"], timeout_s=30)
        finally:
            await events.close()
    print(f"\nRabbitMQ restart: {len(stored)} accepted, statuses {dict(jobs.statuses)}")  # noqa: T201
    assert during[202] > 0
    # Every accepted job completed, exactly once
    assert completed_exactly_once(stored) == {}


async def test_secantusdb_killed_and_restarted_gets_503_meanwhile_and_loses_no_accepted_job(
    fast: Stack, token_for: TokenFor, tmp_path: Path
) -> None:
    # A database of this test's own, on a fixed port and storage path, so it can die and come back
    database = EmbeddedDatabase(tmp_path / "fault-db", port=free_port()).start()
    try:
        fast.env["ENGINEROOM_MONGODB_URL"] = database.url
        fast.start_worker("--engines", "general")
        fast.start_scheduler()
        base_url = fast.start_api()
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            jobs = Submitter(http, token_for())
            await jobs.submit_for(0.3, {"duration_s": 1.5, "steps": 3})  # a few, so recovery is quick
            await poll_job(http, jobs.token, jobs.accepted[0], lambda job: job["state"] == "running")
            # When the database dies with jobs queued and running
            database.kill()
            during = await jobs.submit_for(2.0)
            checks = (await wait_for_readiness(http, 503))["checks"]
            # Then submits and readiness say 503, never 500
            assert during and set(during) == {503}, during
            assert checks["mongodb"] != "ok" and checks["rabbitmq"] == "ok"
            # When it comes back on the same port and storage
            database.start()
            await wait_for_readiness(http, 200, timeout_s=60)
            # Then everything accepted before completes, and new submits work
            after = await jobs.submit_for(1.0, QUICK_JOB)
            stored = await jobs.finished()
            again = await get_job(http, jobs.token, jobs.accepted[-1])
    finally:
        database.stop()
    print(f"\nSecantusDB restart: {len(stored)} accepted, statuses {dict(jobs.statuses)}")  # noqa: T201
    assert set(after) == {202}, after
    assert again["state"] == "completed"
    assert completed_exactly_once(stored) == {}
