"""Delayed jobs and workflows across real processes, the scheduler running as its own process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

TokenFor = Callable[..., str]
FAST = {"ENGINEROOM_SCHEDULER_INTERVAL_S": "0.1", "ENGINEROOM_JOB_LEASE_S": "3"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start(stack: Any) -> str:
    stack.env.update(FAST)
    base_url: str = stack.start_api()
    stack.start_worker("--engines", "general,text_intelligence")
    stack.start_scheduler()
    return base_url


async def poll(
    http: httpx.AsyncClient, path: str, token: str, done: Callable[[Any], bool], timeout_s: float = 30
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = (await http.get(path, headers=auth(token))).json()
        if done(found):
            return found
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)


async def test_a_delayed_job_starts_no_earlier_than_due_and_within_a_second_after(
    stack: Any, token_for: TokenFor
) -> None:
    base_url, token = start(stack), token_for()
    async with httpx.AsyncClient(base_url=base_url) as http:
        body = {"task": "general.demo", "payload": {"duration_s": 0}, "delay_s": 2}
        job = (await http.post("/jobs", json=body, headers=auth(token))).json()
        assert job["state"] == "scheduled"
        done = await poll(http, f"/jobs/{job['id']}", token, lambda found: found["state"] == "completed")
    due, started = datetime.fromisoformat(job["scheduled_at"]), datetime.fromisoformat(done["started_at"])
    assert due <= started <= due + timedelta(seconds=1)


async def test_a_scheduled_job_cancelled_before_due_never_runs(stack: Any, token_for: TokenFor) -> None:
    base_url, token = start(stack), token_for()
    async with httpx.AsyncClient(base_url=base_url) as http:
        body = {"task": "general.demo", "payload": {"duration_s": 0}, "delay_s": 1}
        job = (await http.post("/jobs", json=body, headers=auth(token))).json()
        assert (await http.post(f"/jobs/{job['id']}/cancel", headers=auth(token))).json()["state"] == "cancelled"
        await asyncio.sleep(2)
        final = (await http.get(f"/jobs/{job['id']}", headers=auth(token))).json()
    assert (final["state"], final["attempts"]) == ("cancelled", 0)


async def test_due_jobs_fire_after_the_scheduler_was_down(stack: Any, token_for: TokenFor) -> None:
    base_url, token = start(stack), token_for()
    scheduler = next(process for process in stack.processes if process.name == "scheduler")
    async with httpx.AsyncClient(base_url=base_url) as http:
        scheduler.stop()
        body = {"task": "general.demo", "payload": {"duration_s": 0}, "delay_s": 0.5}
        job = (await http.post("/jobs", json=body, headers=auth(token))).json()
        await asyncio.sleep(1.5)
        assert (await http.get(f"/jobs/{job['id']}", headers=auth(token))).json()["state"] == "scheduled"
        stack.start_scheduler(name="scheduler-again")
        done = await poll(http, f"/jobs/{job['id']}", token, lambda found: found["state"] == "completed")
    assert done["attempts"] == 1


async def test_a_diamond_workflow_passes_data_and_a_cancel_stops_a_running_step(
    stack: Any, token_for: TokenFor
) -> None:
    base_url, token = start(stack), token_for()
    diamond = {
        "steps": [
            {"id": "draft", "task": "text_intelligence.demo", "payload": {"duration_s": 0.1, "result": "text"}},
            {"id": "image", "task": "general.echo_inputs", "depends_on": ["draft"]},
            {"id": "audio", "task": "general.echo_inputs", "depends_on": ["draft"]},
            {"id": "video", "task": "general.echo_inputs", "depends_on": ["image", "audio"]},
        ]
    }
    long_running = {
        "steps": [
            {"id": "slow", "task": "general.demo", "payload": {"duration_s": 30, "steps": 300}},
            {"id": "then", "task": "general.demo", "depends_on": ["slow"]},
        ]
    }
    async with httpx.AsyncClient(base_url=base_url) as http:
        created = (await http.post("/workflows", json=diamond, headers=auth(token))).json()
        done = await poll(http, f"/workflows/{created['id']}", token, lambda found: found["state"] != "running")
        other = (await http.post("/workflows", json=long_running, headers=auth(token))).json()
        slow_job = other["steps"][0]["job_id"]
        await poll(http, f"/jobs/{slow_job}", token, lambda found: found["state"] == "running")
        cancelled = (await http.post(f"/workflows/{other['id']}/cancel", headers=auth(token))).json()
        await asyncio.sleep(1)
        slow = (await http.get(f"/jobs/{slow_job}", headers=auth(token))).json()
        await asyncio.sleep(0.5)
        slow_later = (await http.get(f"/jobs/{slow_job}", headers=auth(token))).json()
        invalid = await http.post(
            "/workflows",
            json={"steps": [{"id": "a", "task": "general.demo", "depends_on": ["a"]}]},
            headers=auth(token),
        )
    steps = {step["id"]: step for step in done["steps"]}
    assert done["state"] == "completed"
    assert steps["video"]["result"]["image"] == {"draft": {"engine": "text_intelligence", "steps": 5, "result": "text"}}
    assert cancelled["state"] == "cancelled" and {step["state"] for step in cancelled["steps"]} == {"cancelled"}
    # The step really stopped: no progress after the cancel, far from done
    assert slow["state"] == "cancelled" and slow["progress"]["percent"] < 20
    assert slow_later["progress"] == slow["progress"]
    assert invalid.status_code == 422 and "cycle" in invalid.json()["detail"][0]["msg"]


async def test_a_failure_branch_runs_and_skips_cascade_and_invalid_definitions_get_422s(
    stack: Any, token_for: TokenFor
) -> None:
    base_url, token = start(stack), token_for()
    branching = {
        "steps": [
            {"id": "call", "task": "general.demo", "payload": {"duration_s": 0, "fail": "permanent"}},
            {"id": "on_error", "task": "general.echo_inputs", "depends_on": ["call"], "condition": "failure"},
            {"id": "next", "task": "general.demo", "payload": {"duration_s": 0}, "depends_on": ["call"]},
            {"id": "after_next", "task": "general.demo", "payload": {"duration_s": 0}, "depends_on": ["next"]},
        ]
    }
    invalid = {
        "cycle": [
            {"id": "a", "task": "general.demo", "depends_on": ["b"]},
            {"id": "b", "task": "general.demo", "depends_on": ["a"]},
        ],
        "unknown steps": [{"id": "a", "task": "general.demo", "depends_on": ["ghost"]}],
        "duplicate step ids": [{"id": "a", "task": "general.demo"}, {"id": "a", "task": "general.demo"}],
        "unknown task": [{"id": "a", "task": "general.nope"}],
    }
    async with httpx.AsyncClient(base_url=base_url) as http:
        created = (await http.post("/workflows", json=branching, headers=auth(token))).json()
        done = await poll(http, f"/workflows/{created['id']}", token, lambda found: found["state"] != "running")
        refusals = {
            problem: await http.post("/workflows", json={"steps": steps}, headers=auth(token))
            for problem, steps in invalid.items()
        }
    steps = {step["id"]: step["state"] for step in done["steps"]}
    assert done["state"] == "failed"
    assert steps == {"call": "failed", "on_error": "completed", "next": "cancelled", "after_next": "cancelled"}
    for problem, response in refusals.items():
        assert response.status_code == 422 and problem in str(response.json()["detail"]), (problem, response.text)


async def test_steps_appended_to_a_running_workflow_run_with_their_inputs_and_an_ended_one_refuses_more(
    stack: Any, token_for: TokenFor
) -> None:
    base_url, token = start(stack), token_for()
    body = {
        "steps": [
            {"id": "draft", "task": "general.demo", "payload": {"duration_s": 0, "result": "text"}},
            {"id": "slow", "task": "general.demo", "payload": {"duration_s": 2, "steps": 20}},
        ]
    }
    appended_steps = [
        {"id": "echo", "task": "general.echo_inputs", "depends_on": ["draft"]},
        {"id": "last", "task": "general.echo_inputs", "depends_on": ["echo", "slow"]},
    ]
    async with httpx.AsyncClient(base_url=base_url) as http:
        created = (await http.post("/workflows", json=body, headers=auth(token))).json()
        await poll(http, f"/jobs/{created['steps'][0]['job_id']}", token, lambda found: found["state"] == "completed")
        appended = await http.post(
            f"/workflows/{created['id']}/steps", json={"steps": appended_steps}, headers=auth(token)
        )
        done = await poll(http, f"/workflows/{created['id']}", token, lambda found: found["state"] != "running")
        late = await http.post(
            f"/workflows/{created['id']}/steps",
            json={"steps": [{"id": "late", "task": "general.demo"}]},
            headers=auth(token),
        )
    assert appended.status_code == 200, appended.text
    steps = {step["id"]: step for step in done["steps"]}
    draft = {"engine": "general", "steps": 5, "result": "text"}
    assert done["state"] == "completed" and steps["echo"]["result"] == {"draft": draft}
    assert steps["last"]["result"] == {
        "echo": {"draft": draft},
        "slow": {"engine": "general", "steps": 20, "result": None},
    }
    assert late.status_code == 409 and "ended" in late.json()["detail"]
