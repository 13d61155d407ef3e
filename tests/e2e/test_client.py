"""``engineroom.client`` against real processes: the async and sync clients, their typed errors, the resuming
event stream, and the ``engineroom submit`` / ``watch`` commands built on them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
import websockets

from engineroom.client import AsyncClient, Client
from engineroom.client.errors import WaitTimedOut
from engineroom.core.errors import Conflict, Forbidden, InvalidRequest, NotFound, RateLimited, Unauthenticated
from engineroom.models.event import Event
from engineroom.models.job import JobState, JobSubmit
from tests.e2e.test_walking_skeleton import EVENT_TIMEOUT_S, TokenFor, ws_url

#: Seconds a subprocess of these tests (a script, the CLI) may take.
SUBPROCESS_TIMEOUT_S = 60.0
#: Progress steps of the burst that the event stream must follow across a dropped connection.
BURST_STEPS = 150


async def next_event(events: Any) -> Event:
    event: Event = await asyncio.wait_for(anext(events), EVENT_TIMEOUT_S)
    return event


async def test_a_submitted_job_is_waited_for_and_its_result_read(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    async with AsyncClient(base_url, token_for("alice", "acme")) as client:
        job = await client.submit("general.demo", {"duration_s": 0.3, "steps": 3, "result": "hello"}, tags=["py"])
        assert job.state == JobState.QUEUED and job.tags == ["py"]
        finished = await client.wait(job.id, timeout_s=EVENT_TIMEOUT_S)
        # Waiting again on a job that finished before the socket opened answers at once, from the read after hello
        again = await client.wait(job.id, timeout_s=5)
    assert finished.state == JobState.COMPLETED
    assert finished.result == {"engine": "general", "steps": 3, "result": "hello"}
    assert again.state == JobState.COMPLETED and again.finished_at == finished.finished_at


async def test_wait_gives_up_at_its_timeout_and_the_job_goes_on(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()  # no worker: the job stays queued
    async with AsyncClient(base_url, token_for("alice", "acme")) as client:
        job = await client.submit("general.demo", {"duration_s": 0})
        with pytest.raises(WaitTimedOut):
            await client.wait(job.id, timeout_s=1.0)
        assert (await client.get(job.id)).state == JobState.QUEUED


async def test_list_pages_through_250_jobs_and_returns_each_once(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()  # jobs change state while the pages are read: the cursor must not care
    specs = [JobSubmit(task="general.demo", payload={"duration_s": 0, "steps": 1}) for _ in range(250)]
    async with AsyncClient(base_url, token_for("alice", "acme")) as client:
        accepted = await client.submit_many(specs)
        listed = [job.id async for job in client.list(page_size=60)]
        still_queued = [job async for job in client.list(state=JobState.QUEUED, page_size=200)]
    assert len(accepted.ids) == 250
    assert len(listed) == len(set(listed)) == 250
    assert set(listed) == set(accepted.ids)
    assert listed == sorted(listed, reverse=True)  # newest first
    assert all(job.state == JobState.QUEUED for job in still_queued)


async def test_the_event_stream_resumes_across_a_dropped_connection_with_every_event_once_in_order(
    stack: Any, token_for: TokenFor
) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    token = token_for("alice", "acme")
    observer = await websockets.connect(ws_url(base_url, token))  # a reference that never drops
    async with AsyncClient(base_url, token) as client, client.events(["mine"]) as stream:
        await stream.open()
        job = await client.submit("general.demo", {"duration_s": 1.5, "steps": BURST_STEPS})
        received = [await next_event(stream) for _ in range(30)]
        dropped = stream.connection
        assert dropped is not None
        dropped.transport.abort()  # the network goes away mid-burst, without a close handshake
        await asyncio.sleep(0.5)  # and stays away while a third of the burst goes by
        while received[-1].type != "job.completed":
            received.append(await next_event(stream))
        assert stream.connection is not dropped  # it did reconnect
    reference = await reference_events(observer, job.id)
    await observer.close()
    ids = [event.id for event in received if event.job_id == job.id]
    assert len(ids) == BURST_STEPS + 3  # queued, started, one progress per step, completed
    assert ids == reference == sorted(ids)


async def reference_events(socket: Any, job_id: str) -> list[str]:
    ids: list[str] = []
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), EVENT_TIMEOUT_S))
        if frame.get("job_id") == job_id:
            ids.append(frame["id"])
            if frame["type"] == "job.completed":
                return ids


async def test_http_errors_arrive_as_typed_exceptions_with_the_servers_detail(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    async with (
        AsyncClient(base_url, token_for("alice", "acme")) as alice,
        AsyncClient(base_url, token_for("bob", "acme")) as bob,
        AsyncClient(base_url, "not-a-jwt") as stranger,
    ):
        job = await alice.submit("general.demo", {"duration_s": 0})
        await alice.wait(job.id, timeout_s=EVENT_TIMEOUT_S)
        with pytest.raises(NotFound) as not_found:
            await bob.get(job.id)
        with pytest.raises(Forbidden) as forbidden:
            await bob.pause("general", "maintenance")
        with pytest.raises(InvalidRequest) as invalid:
            await alice.submit("general.demo", {"steps": "many"})
        with pytest.raises(Conflict) as conflict:
            await alice.cancel(job.id)
        with pytest.raises(Unauthenticated) as unauthenticated:
            await stranger.get(job.id)
        with pytest.raises(Unauthenticated):
            await anext(stranger.events(["mine"]))  # the handshake's 401 too, not a reconnect loop
        with pytest.raises(NotFound):
            await bob.wait(job.id, timeout_s=5)  # the socket refuses the topic; the poll says why
    for error in (not_found, forbidden, invalid, conflict, unauthenticated):
        assert error.value.detail and error.value.detail != type(error.value).detail, error.value
    assert "steps" in invalid.value.detail


async def test_a_rate_limited_submit_raises_with_retry_after(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api(env={"ENGINEROOM_RATE_LIMIT_PER_MINUTE": "2"})
    async with AsyncClient(base_url, token_for("alice", "acme")) as client:
        for _ in range(2):
            await client.submit("general.demo", {"duration_s": 0})
        with pytest.raises(RateLimited) as limited:
            await client.submit("general.demo", {"duration_s": 0})
    assert 0 < limited.value.retry_after_s <= 60
    assert limited.value.detail


async def test_workflows_and_queue_controls_answer_with_the_apis_models(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    stack.start_scheduler()  # releases the appended step once its dependency is done
    async with AsyncClient(base_url, token_for("ops", "acme", admin=True)) as admin:
        paused = await admin.pause("video_pipeline", "provider outage")
        limited = await admin.set_limits("video_pipeline", max_concurrency=0)
        resumed = await admin.resume("video_pipeline")
        stats = await admin.queue_stats("video_pipeline")
        engines = {queue.engine for queue in await admin.queues()}
        steps = [
            {"id": "first", "task": "general.demo", "payload": {"duration_s": 0, "result": 1}},
            {"id": "slow", "task": "general.demo", "payload": {"duration_s": 30}, "depends_on": ["first"]},
        ]
        workflow = await admin.create_workflow(steps, name="pipeline")
        await admin.wait(workflow.steps[0].job_id, timeout_s=EVENT_TIMEOUT_S)
        appended = await admin.append_steps(
            workflow.id, [{"id": "echo", "task": "general.echo_inputs", "payload": {}, "depends_on": ["first"]}]
        )
        echo = await admin.wait(appended.steps[-1].job_id, timeout_s=EVENT_TIMEOUT_S)
        cancelled = await admin.cancel_workflow(workflow.id)
        read = await admin.get_workflow(workflow.id)
    assert paused.paused and paused.reason == "provider outage"
    assert limited.max_concurrency == 0 and not resumed.paused and stats.max_concurrency == 0
    assert "video_pipeline" in engines
    assert [step.id for step in workflow.steps] == ["first", "slow"]
    assert [step.id for step in appended.steps] == ["first", "slow", "echo"]
    assert echo.state == "completed" and echo.result == {"first": {"engine": "general", "steps": 5, "result": 1}}
    assert cancelled.state == read.state == "cancelled"
    assert [step.state for step in read.steps] == ["completed", "cancelled", "completed"]


def test_the_sync_client_works_from_a_plain_script(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    script = (
        "from engineroom.client import Client\n"
        "with Client() as client:\n"  # URL and token from ENGINEROOM_URL / ENGINEROOM_TOKEN
        "    job = client.submit('general.demo', {'duration_s': 0.2, 'steps': 2, 'result': 'from a script'})\n"
        "    print(client.wait(job.id, timeout_s=30).result['result'])\n"
    )
    env = {**stack.env, "ENGINEROOM_URL": base_url, "ENGINEROOM_TOKEN": token_for("alice", "acme")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from a script"


async def test_the_blocking_client_waits_inside_a_running_event_loop_as_in_a_notebook(
    stack: Any, token_for: TokenFor
) -> None:
    # Given a loop running in this thread, as in Jupyter (this test is a coroutine), and a gateway with a worker
    asyncio.get_running_loop()
    base_url = stack.start_api()
    stack.start_worker()
    with Client(base_url, token_for("alice", "acme")) as alice, Client(base_url, token_for("bob", "acme")) as bob:
        # When the blocking client waits, with no await anywhere
        job = alice.submit("general.demo", {"duration_s": 0.3, "steps": 3, "result": "in a notebook"})
        finished = alice.wait(job.id, timeout_s=EVENT_TIMEOUT_S)
        slow = alice.submit("general.demo", {"duration_s": 30})
        with pytest.raises(WaitTimedOut):
            alice.wait(slow.id, timeout_s=1.0)
        with pytest.raises(NotFound):
            bob.wait(job.id, timeout_s=5)  # the socket refuses the topic; the poll says why
        alice.cancel(slow.id)
    # Then it heard the end as the async client does, timeouts and typed errors included
    assert finished.state == JobState.COMPLETED
    assert finished.result == {"engine": "general", "steps": 3, "result": "in a notebook"}


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engineroom.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def test_engineroom_submit_wait_prints_the_result(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    payload = json.dumps({"duration_s": 0.2, "steps": 2, "result": {"answer": 42}})
    token = token_for("alice", "acme")
    done = run_cli(
        "submit", "general.demo", "--payload", payload, "--wait", "--url", base_url, "--token", token, env=stack.env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"engine": "general", "steps": 2, "result": {"answer": 42}}
    refused = run_cli("submit", "general.demo", "--payload", "{}", "--url", base_url, "--token", "bad", env=stack.env)
    assert refused.returncode == 1 and "Unauthenticated" in refused.stderr


def test_engineroom_watch_prints_a_jobs_events_until_it_finishes(stack: Any, token_for: TokenFor) -> None:
    base_url = stack.start_api()
    stack.start_worker()
    env = {**stack.env, "ENGINEROOM_URL": base_url, "ENGINEROOM_TOKEN": token_for("alice", "acme")}
    submitted = run_cli("submit", "general.demo", "--payload", '{"duration_s": 4, "steps": 4}', env=env)
    job_id = submitted.stdout.strip()
    assert submitted.returncode == 0 and len(job_id) == 26, submitted.stderr
    watched = run_cli("watch", job_id, env=env)
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[-1]["type"] == "job.completed" and events[-1]["job_id"] == job_id
    assert all(event["job_id"] == job_id for event in events)
