"""Queue control across real processes: two workers, the scheduler, the gateway, RabbitMQ, SecantusDB."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import make_token
from tests.e2e.conftest import START_TIMEOUT_S, listed_workers

TokenFor = Callable[..., str]
FAST = {
    "ENGINEROOM_SCHEDULER_INTERVAL_S": "0.1",
    "ENGINEROOM_JOB_LEASE_S": "3",
    "ENGINEROOM_DISPATCH_GRACE_S": "1",
    # A compressed "minute", so a rate limit can be watched in seconds
    "ENGINEROOM_RATE_WINDOW_S": "4",
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start_cluster(stack: Any, *, workers: int = 2, engines: str = "general", threads: int = 8) -> str:
    """A gateway, a scheduler and ``workers`` worker processes (1 process × ``threads`` threads each), returned once
    ``GET /workers`` lists them all: a test spreading jobs over two workers saw a loaded machine's second worker
    come up after the first had run all thirty."""
    stack.env.update(FAST)
    base_url: str = stack.start_api()
    stack.start("scheduler", "scheduler")
    for number in range(workers):
        stack.start(f"worker-{number}", "worker", "--engines", engines, "--processes", "1", "--threads", str(threads))
    admin = make_token("ops", "acme", admin=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(listed := listed_workers(base_url, admin)) < workers:
        assert time.monotonic() < deadline, f"{workers} workers not listed: {listed}\n{stack.logs()}"
        time.sleep(0.1)
    return base_url


async def submit_many(
    http: httpx.AsyncClient, token: str, count: int, payload: dict[str, Any], **body: Any
) -> list[str]:
    async def one() -> str:
        response = await http.post(
            "/jobs", json={"task": "general.demo", "payload": payload, **body}, headers=auth(token)
        )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    return [await one() for _ in range(count)]


async def wait_all(
    http: httpx.AsyncClient, token: str, job_ids: list[str], states: set[str], timeout_s: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [(await http.get(f"/jobs/{job_id}", headers=auth(token))).json() for job_id in job_ids]
        if all(job["state"] in states for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"not all in {states}: {sorted(job['state'] for job in jobs)}")
        await asyncio.sleep(0.2)


async def wait_for_a_start(http: httpx.AsyncClient, token: str, job_ids: list[str], timeout_s: float = 60) -> None:
    """Until one of the jobs has started (its start is written 0.1 s in): what a test times from."""
    deadline = time.monotonic() + timeout_s
    while not any(
        [(await http.get(f"/jobs/{job_id}", headers=auth(token))).json()["started_at"] for job_id in job_ids]
    ):
        assert time.monotonic() < deadline, "no job started"
        await asyncio.sleep(0.1)


def intervals(jobs: list[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    return [(datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"])) for job in jobs]


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


async def put_limits(http: httpx.AsyncClient, admin: str, engine: str, **limits: Any) -> None:
    response = await http.put(f"/queues/{engine}/limits", json=limits, headers=auth(admin))
    assert response.status_code == 200, response.text


@pytest.fixture
def loaded_cores() -> Iterator[None]:
    """Both cores of the machine kept busy by another process for the test's length: heartbeats and database
    calls then run late, as on a saturated host."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(2, os.cpu_count() or 2))
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def starts_of(job: dict[str, Any]) -> list[str]:
    """Each time a worker started the job, from its history (a job run twice has two)."""
    return [entry["detail"] for entry in job["history"] if entry["state"] == "running"]


# The spinning processes load both cores for every test then running: under xdist these run alone, so no other test
# is slowed (the kill-under-load test took 40-68 s beside them, against 13-17 s).
@pytest.mark.parametrize(
    "machine", ["idle", pytest.param("both cores loaded", marks=[pytest.mark.loads_cores, pytest.mark.alone])]
)
@pytest.mark.timeout(180)
async def test_the_limit_holds_across_two_worker_processes(
    stack: Any, token_for: TokenFor, machine: str, request: pytest.FixtureRequest
) -> None:
    if machine == "both cores loaded":
        request.getfixturevalue("loaded_cores")
    base_url = start_cluster(stack)
    admin = token_for("ops", "acme", admin=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        await put_limits(http, admin, "general", max_concurrency=3)
        job_ids = await submit_many(http, admin, 30, {"duration_s": 0.3, "steps": 2})
        jobs = await wait_all(http, admin, job_ids, {"completed"}, timeout_s=120)
    workers = {starts_of(job)[0].split(" on ")[1].split(":")[1] for job in jobs}
    assert len(workers) == 2, "both worker processes should have run jobs"
    assert [job["id"] for job in jobs if len(starts_of(job)) != 1 or job["attempts"] != 1] == []
    assert most_at_once(intervals(jobs)) == 3


@pytest.mark.loads_cores
@pytest.mark.alone
@pytest.mark.timeout(300)
async def test_three_hundred_jobs_on_two_loaded_workers_never_exceed_the_limit_and_none_starts_twice(
    stack: Any, token_for: TokenFor, loaded_cores: None
) -> None:
    base_url = start_cluster(stack)  # 2 worker processes x 8 threads, leases of 3 s
    admin = token_for("ops", "acme", admin=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        await put_limits(http, admin, "general", max_concurrency=3)
        jobs = [{"task": "general.demo", "payload": {"duration_s": 0.05, "steps": 1}} for _ in range(300)]
        response = await http.post("/jobs/batch", json={"jobs": jobs}, headers=auth(admin))
        assert response.status_code == 202, response.text
        job_ids = response.json()["ids"]
        done = await wait_all(http, admin, job_ids, {"completed"}, timeout_s=240)
    assert [job["id"] for job in done if len(starts_of(job)) != 1 or job["attempts"] != 1] == []
    assert most_at_once(intervals(done)) <= 3


@pytest.mark.timeout(120)
async def test_a_worker_process_takes_no_more_slots_than_it_has_threads(stack: Any, token_for: TokenFor) -> None:
    # Given two worker processes of 2 threads each, and a limit far above their 4 threads
    base_url = start_cluster(stack, threads=2)
    admin = token_for("ops", "acme", admin=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        await put_limits(http, admin, "general", max_concurrency=20)
        # When 16 jobs of a second each arrive at once
        jobs = [{"task": "general.demo", "payload": {"duration_s": 1.0, "steps": 2}} for _ in range(16)]
        response = await http.post("/jobs/batch", json={"jobs": jobs}, headers=auth(admin))
        assert response.status_code == 202, response.text
        job_ids = response.json()["ids"]
        slots_held: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            queue = (await http.get("/queues/general", headers=auth(admin))).json()
            slots_held.append(queue["running"])
            if queue["queued"] == 0 and queue["running"] == 0:
                break
            await asyncio.sleep(0.1)
        done = await wait_all(http, admin, job_ids, {"completed"})
    # Then the engine's slots held at once never exceed the threads that can run them: the rest of the backlog
    # waited in RabbitMQ, for either process, and no job waited in memory while its lease ran down
    assert 0 < max(slots_held) <= 4, slots_held
    assert len({starts_of(job)[0].split(" on ")[1] for job in done}) == 2
    assert [job["id"] for job in done if len(starts_of(job)) != 1 or job["attempts"] != 1] == []


STALLING_TASK_MODULE = """
import threading
import time

from dramatiq.asyncio import get_event_loop_thread

from engineroom.actors import JobContext, task


@task("general", name="stall_database_calls", timeout_s=60)
def stall_database_calls(ctx: JobContext, stall_s: float) -> dict:
    \"\"\"Hold up every database call of this worker's threads, as a saturated database would.\"\"\"
    time.sleep(0.5)  # the start is written first
    loop_thread = get_event_loop_thread()
    released = threading.Event()
    loop_thread.loop.call_soon_threadsafe(lambda: (time.sleep(stall_s), released.set()))
    released.wait()
    return {"stalled_s": stall_s}
"""


async def test_a_worker_whose_database_calls_stall_past_the_lease_keeps_its_job(
    stack: Any, token_for: TokenFor
) -> None:
    stack.load_tasks("stalling_tasks_e2e", STALLING_TASK_MODULE)
    base_url = start_cluster(stack)  # leases of 3 s; the stall lasts three leases
    admin = token_for("ops", "acme", admin=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post(
            "/jobs", json={"task": "general.stall_database_calls", "payload": {"stall_s": 9}}, headers=auth(admin)
        )
        assert response.status_code == 202, response.text
        [job] = await wait_all(http, admin, [response.json()["id"]], {"completed", "failed"})
    assert job["state"] == "completed"
    assert len(starts_of(job)) == 1 and job["attempts"] == 1, job["history"]


async def test_a_live_limit_change_and_a_pause_show_in_the_timeline(stack: Any, token_for: TokenFor) -> None:
    base_url = start_cluster(stack)
    admin = token_for("ops", "acme", admin=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        await put_limits(http, admin, "general", max_concurrency=1)
        job_ids = await submit_many(http, admin, 12, {"duration_s": 0.8, "steps": 4})
        await wait_for_a_start(http, admin, job_ids)  # the workers may still be booting on a loaded machine
        await asyncio.sleep(2.0)
        raised_at = datetime.now().astimezone()
        await put_limits(http, admin, "general", max_concurrency=3)
        await asyncio.sleep(2.0)
        paused_at = datetime.now().astimezone()
        await http.post("/queues/general/pause", json={"reason": "provider down"}, headers=auth(admin))
        await asyncio.sleep(2.0)
        resumed_at = datetime.now().astimezone()
        await http.post("/queues/general/resume", headers=auth(admin))
        jobs = await wait_all(http, admin, job_ids, {"completed"})
    spans = sorted(intervals(jobs))
    print("\ntimeline (s from first start): limit 1, raised to 3, paused, resumed")  # noqa: T201
    origin = spans[0][0]
    for mark, at in (("raised to 3", raised_at), ("paused", paused_at), ("resumed", resumed_at)):
        print(f"  {mark:12s} at {(at - origin).total_seconds():6.2f}")  # noqa: T201
    for start, end in spans:
        print(f"  job {(start - origin).total_seconds():6.2f} → {(end - origin).total_seconds():6.2f}")  # noqa: T201
    assert most_at_once([span for span in spans if span[0] < raised_at]) == 1
    assert most_at_once(spans) == 3
    started_while_paused = [start for start, _ in spans if paused_at + timedelta(seconds=1) < start < resumed_at]
    assert started_while_paused == []


@pytest.mark.timeout(240)  # two cluster starts and a backlog to drain, on a machine that may be busy
async def test_a_pause_survives_a_restart_of_every_process_and_resume_drains_in_priority_order(
    stack: Any, token_for: TokenFor
) -> None:
    base_url = start_cluster(stack)
    admin = token_for("ops", "acme", admin=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        paused = await http.post("/queues/general/pause", json={"reason": "quota"}, headers=auth(admin))
        assert paused.status_code == 200
        normal = await submit_many(http, admin, 60, {"duration_s": 0}, priority="normal")
        high = (await submit_many(http, admin, 1, {"duration_s": 0}, priority="high"))[0]
    # Every process goes down and comes back
    stack.stop()
    stack.processes.clear()
    base_url = start_cluster(stack)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        queue = (await http.get("/queues/general", headers=auth(admin))).json()
        assert (queue["paused"], queue["reason"], queue["paused_by"]) == (True, "quota", "ops")
        assert queue["queued"] == 61 and queue["running"] == 0
        await asyncio.sleep(1)
        assert (await http.get(f"/jobs/{high}", headers=auth(admin))).json()["state"] == "queued"
        await put_limits(http, admin, "general", max_concurrency=4)
        await http.post("/queues/general/resume", headers=auth(admin))
        jobs = await wait_all(http, admin, [high, *normal], {"completed"}, timeout_s=120)
    first = min(jobs, key=lambda job: job["started_at"])
    assert first["id"] == high


async def test_a_rate_limit_holds_across_two_worker_processes(stack: Any, token_for: TokenFor) -> None:
    base_url = start_cluster(stack)
    admin = token_for("ops", "acme", admin=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        await put_limits(http, admin, "general", max_concurrency=8, max_starts_per_minute=6)
        job_ids = await submit_many(http, admin, 14, {"duration_s": 0})
        jobs = await wait_all(http, admin, job_ids, {"completed"})
    starts = sorted(datetime.fromisoformat(job["started_at"]) for job in jobs)
    window = timedelta(seconds=4)
    assert all(later - earlier >= window for earlier, later in zip(starts, starts[6:], strict=False))
    assert starts[-1] - starts[0] < 4 * window  # and the rest started as the window allowed, not much later


async def test_a_flooding_tenant_does_not_hold_back_another_beyond_its_cap(stack: Any, token_for: TokenFor) -> None:
    base_url = start_cluster(stack)
    flooder, other = token_for("ops", "flood", admin=True), token_for("bob", "quiet")
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        await put_limits(http, flooder, "general", max_concurrency=2, max_concurrency_per_tenant=1)
        flood = await submit_many(http, flooder, 10, {"duration_s": 0.5, "steps": 2})
        await asyncio.sleep(0.5)
        quiet = await submit_many(http, other, 1, {"duration_s": 0})
        quiet_job = (await wait_all(http, other, quiet, {"completed"}, timeout_s=10))[0]
        flooded = await wait_all(http, flooder, flood, {"completed"})
    # The flood runs one job at a time (its cap), 10 x 0.5 s. Its waiting messages are parked one by one ahead of
    # the quiet one, which then starts beside the flood's running job: long before the flood is through (not
    # measured in seconds: parking nine messages takes a loaded machine a few of them; CI saw 2.5 s).
    quiet_started = datetime.fromisoformat(quiet_job["started_at"])
    flood_starts = [datetime.fromisoformat(job["started_at"]) for job in flooded]
    assert sum(start < quiet_started for start in flood_starts) < len(flood) / 2, (quiet_started, sorted(flood_starts))
    assert most_at_once(intervals(flooded)) == 1


async def test_a_killed_workers_slot_comes_back(stack: Any, token_for: TokenFor) -> None:
    stack.env.update(FAST)
    base_url = stack.start_api()
    stack.start("scheduler", "scheduler")
    admin = token_for("ops", "acme", admin=True)
    # A worker of its own process group, so SIGKILL takes Dramatiq's parent and child alike
    victim = subprocess.Popen(
        [sys.executable, "-m", "engineroom.cli", "worker", "--engines", "video_pipeline", "--threads", "2"],
        env=stack.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            body = {"task": "video_pipeline.demo", "payload": {"duration_s": 3, "steps": 30}}
            long_job = (await http.post("/jobs", json=body, headers=auth(admin))).json()["id"]
            await wait_all(http, admin, [long_job], {"running"}, timeout_s=20)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            # video_pipeline's one slot is held by a dead worker; a new worker gets it once the lease lapses
            stack.start("worker-new", "worker", "--engines", "video_pipeline", "--threads", "2")
            body["payload"] = {"duration_s": 0}
            next_job = (await http.post("/jobs", json=body, headers=auth(admin))).json()["id"]
            jobs = await wait_all(http, admin, [long_job, next_job], {"completed"}, timeout_s=40)
            # A job's slot is freed just after its outcome is stored: give that write a moment
            deadline = time.monotonic() + 10
            while (queue := (await http.get("/queues/video_pipeline", headers=auth(admin))).json())["running"]:
                assert time.monotonic() < deadline, queue
                await asyncio.sleep(0.1)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    assert jobs[0]["attempts"] == 2 and most_at_once(intervals(jobs)) == 1
    assert queue["running"] == 0 and queue["completed_last_hour"] == 2


async def test_stats_match_the_jobs_real_states(stack: Any, token_for: TokenFor) -> None:
    base_url = start_cluster(stack, workers=1)
    admin = token_for("ops", "acme", admin=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        done = await submit_many(http, admin, 5, {"duration_s": 0})
        failed = await submit_many(http, admin, 2, {"duration_s": 0, "fail": "permanent"})
        await wait_all(http, admin, done, {"completed"})
        await wait_all(http, admin, failed, {"failed"})
        await http.post("/queues/general/pause", json={"reason": "count"}, headers=auth(admin))
        held = await submit_many(http, admin, 3, {"duration_s": 0})
        await asyncio.sleep(1)
        queue = (await http.get("/queues/general", headers=auth(admin))).json()
        listed = (await http.get("/jobs", params={"state": "queued"}, headers=auth(admin))).json()["items"]
    assert {job["id"] for job in listed} == set(held)
    assert (queue["queued"], queue["running"], queue["completed_last_hour"], queue["failed_last_hour"]) == (3, 0, 5, 2)
    # A paused engine is not consumed: its line waits in RabbitMQ (with, at times, a harmless second message of a job
    # whose outbox flag the scheduler saw before the gateway's batched clear: FAST's dispatch grace is 1 s)
    assert queue["success_rate"] == 5 / 7 and queue["broker_depth"] >= 3 and queue["waiting_for_slot"] == 3
