"""A RabbitMQ that lost its queues: ``engineroom reconcile`` and the scheduler send the messages of the jobs MongoDB
holds as queued again, in priority order, and a job whose message arrives twice still runs once.

Real processes against SecantusDB and the real RabbitMQ; each test has queues of its own (``namespace``) that the
test deletes or purges with pika, as an operator's mistake or a node restored empty would.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from engineroom.core.config import Settings
from engineroom.messaging.broker import job_message
from tests.e2e.test_reliability import WORKER_READY, Job, TokenFor, is_terminal, logged, poll_job, submit
from tests.unit.store.test_jobs import make_job

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

#: Retries, the outbox and the broker check timed for tests: a job queued 1 s ago is expected in RabbitMQ.
FAST_SETTINGS = {
    "ENGINEROOM_SCHEDULER_INTERVAL_S": "0.1",
    "ENGINEROOM_JOB_LEASE_S": "3",
    "ENGINEROOM_DISPATCH_GRACE_S": "1",
    "ENGINEROOM_BROKER_CHECK_INTERVAL_S": "0.5",
}
#: ``counted`` writes one line per run to the file named by ``RUNS_FILE``, so a test counts runs, not messages;
#: ``held`` runs until the file named by ``RELEASE_FILE`` exists, so a test needs no race against a job's length.
TASK_MODULE = """
import os
import time

from engineroom.actors import JobContext, task


@task("general", name="counted", max_retries=0, timeout_s=60)
def counted(ctx: JobContext, duration_s: float = 0.0) -> str:
    with open(os.environ["RUNS_FILE"], "a") as runs:
        runs.write(ctx.job_id + "\\n")
    time.sleep(duration_s)
    return "done"


@task("general", name="held", max_retries=0, timeout_s=60)
def held(ctx: JobContext) -> str:
    while not os.path.exists(os.environ["RELEASE_FILE"]):
        time.sleep(0.05)
    return "released"
"""


@pytest.fixture
def fast(stack: Stack) -> Stack:
    stack.env.update(FAST_SETTINGS)
    return stack


@pytest.fixture
def with_tasks(fast: Stack, tmp_path: Path) -> Stack:
    """The fast stack, its processes loading ``TASK_MODULE``."""
    fast.load_tasks("reconcile_tasks_e2e", TASK_MODULE)
    (tmp_path / "runs.txt").touch()
    fast.env["RUNS_FILE"] = str(tmp_path / "runs.txt")
    fast.env["RELEASE_FILE"] = str(tmp_path / "release")
    return fast


@pytest.fixture
def channel(amqp_url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield connection.channel()
    connection.close()


async def run_command(stack: Stack, name: str, *args: str) -> str:
    """Run ``engineroom *args`` to its end; its output. It must succeed."""
    process = stack.start(name, *args)
    code = await asyncio.to_thread(process.popen.wait, 60)
    assert code == 0, process.log()
    return process.log_path.read_text()


def queue_is_missing(channel: BlockingChannel, queue: str) -> bool:
    try:
        channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return True
    return False


def start_order(jobs: list[Job]) -> list[str]:
    return [job["id"] for job in sorted(jobs, key=lambda job: job["started_at"])]


def priority_order(jobs: list[Job]) -> list[str]:
    """Highest priority first, then oldest (ids are time-sortable)."""
    return [job["id"] for job in sorted(jobs, key=lambda job: (-job["priority"], job["id"]))]


def assert_ran_once(job: Job) -> None:
    assert job["state"] == "completed" and job["attempts"] == 1, job
    assert [entry["state"] for entry in job["history"]].count("running") == 1, job["history"]


async def test_reconcile_sends_the_jobs_of_a_lost_queue_again_and_they_run_in_priority_order(
    fast: Stack, token_for: TokenFor, namespace: str, amqp_url: str
) -> None:
    base_url = fast.start_api()
    token = token_for()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        # Given jobs of several priorities queued while no worker runs
        jobs = [
            await submit(http, token, "general.demo", {"duration_s": 0.05, "steps": 1}, priority=p)
            for p in (0, 5, 10, 5, 8)
        ]
        # When RabbitMQ loses the engine's queue
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        channel.queue_delete(f"{namespace}general")
        # Then a dry run counts them, and neither sends nor declares anything
        dry_run = await run_command(fast, "reconcile-dry-run", "reconcile", "--engine", "general", "--dry-run")
        assert "general: 5 queued job(s) expected in RabbitMQ (queue: missing)" in dry_run, dry_run
        assert "would re-send 5 job(s)" in dry_run, dry_run
        assert queue_is_missing(connection.channel(), f"{namespace}general")
        connection.close()
        # When reconcile runs for every engine, then a worker starts
        report = await run_command(fast, "reconcile", "reconcile")
        assert "re-sent 5 job(s)" in report, report
        fast.start_worker("--engines", "general", "--threads", "1")
        done = [await poll_job(http, token, job["id"], is_terminal) for job in jobs]
    # Then every job ran, once, highest priority first, then oldest
    for job in done:
        assert_ran_once(job)
    assert start_order(done) == priority_order(done)


@pytest.mark.parametrize("loss", ["deleted", "purged"])
async def test_the_scheduler_sends_again_by_itself_the_jobs_of_a_queue_rabbitmq_lost(
    fast: Stack, token_for: TokenFor, namespace: str, channel: BlockingChannel, loss: str
) -> None:
    scheduler = fast.start_scheduler()
    base_url = fast.start_api()
    token = token_for()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        # Given jobs queued while no worker runs, their messages in the queue a while (the scheduler leaves them)
        jobs = [
            await submit(http, token, "general.demo", {"duration_s": 0.05, "steps": 1}, priority=p) for p in (3, 9, 3)
        ]
        await asyncio.sleep(2.0)
        assert "sending them again" not in scheduler.log_path.read_text()
        # When RabbitMQ loses the queue, or its messages
        if loss == "deleted":
            channel.queue_delete(f"{namespace}general")
        else:
            channel.queue_purge(f"{namespace}general")
        # Then the scheduler sends them again by itself, and a worker started now runs them in priority order
        await logged(scheduler, "re-sent 3 job(s) of general")
        fast.start_worker("--engines", "general", "--threads", "1")
        done = [await poll_job(http, token, job["id"], is_terminal) for job in jobs]
        await asyncio.sleep(2.0)  # a few more checks: a healthy queue is not sent again
    for job in done:
        assert_ran_once(job)
    assert start_order(done) == priority_order(done)
    assert scheduler.log_path.read_text().count("sending them again") == 1, scheduler.log()


async def test_the_scheduler_sends_again_the_jobs_of_a_queue_purged_under_a_busy_worker(
    with_tasks: Stack, token_for: TokenFor, namespace: str, channel: BlockingChannel
) -> None:
    scheduler = with_tasks.start_scheduler()
    worker = with_tasks.start_worker("--engines", "general", "--threads", "1")
    base_url = with_tasks.start_api()
    await logged(worker, WORKER_READY)
    token = token_for()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        # Given a one-thread worker busy with a job that runs until released, four more waiting (some prefetched)
        long_job = await submit(http, token, "general.held", {})
        await poll_job(http, token, long_job["id"], lambda job: job["state"] == "running")
        waiting = [await submit(http, token, "general.demo", {"duration_s": 0.05, "steps": 1}) for _ in range(4)]
        # When the queue is purged: what the worker holds is invisible to AMQP, so the queue looks only suspect
        await asyncio.sleep(1.0)
        channel.queue_purge(f"{namespace}general")
        # Then, once it stayed empty for a few checks, the scheduler sends them all again (the prefetched ones too:
        # it cannot tell) while the long job still runs, and every job runs once
        await logged(scheduler, "re-sent 4 job(s) of general")
        assert (await poll_job(http, token, long_job["id"], lambda job: True))["state"] == "running"
        Path(with_tasks.env["RELEASE_FILE"]).touch()
        done = [await poll_job(http, token, job["id"], is_terminal) for job in [long_job, *waiting]]
    for job in done:
        assert_ran_once(job)


async def test_a_job_whose_message_arrives_twice_runs_once(
    with_tasks: Stack, token_for: TokenFor, settings: Settings, namespace: str, channel: BlockingChannel
) -> None:
    runs_file = Path(with_tasks.env["RUNS_FILE"])
    with_tasks.start_scheduler()
    base_url = with_tasks.start_api()
    token = token_for()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        # Given jobs queued while no worker runs, each sent a second time by ``engineroom reconcile``
        jobs = [await submit(http, token, "general.counted", {"duration_s": 1.0}) for _ in range(3)]
        report = await run_command(with_tasks, "reconcile", "reconcile", "--engine", "general")
        assert "re-sent 3 job(s)" in report, report
        # When a worker with threads to spare takes both messages of each job at once
        worker = with_tasks.start_worker("--engines", "general", "--threads", "4")
        done = [await poll_job(http, token, job["id"], is_terminal) for job in jobs]
        # and one more copy of a message arrives after its job finished
        late = job_message(settings.model_copy(update={"namespace": namespace}), make_job(id=jobs[0]["id"]))
        channel.basic_publish("", late.queue_name, late.encode(), pika.BasicProperties(delivery_mode=2, priority=5))
        await logged(worker, f"job {jobs[0]['id']} is completed, not queued; not running it")
    # Then each job ran exactly once
    for job in done:
        assert_ran_once(job)
    runs = Counter(runs_file.read_text().split())
    assert runs == Counter({job["id"]: 1 for job in jobs}), runs
    assert "Traceback" not in worker.log_path.read_text(), worker.log()
