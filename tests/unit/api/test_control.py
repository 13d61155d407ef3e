"""Retries, cancel, retry, delete, idempotency and ``?wait`` through the gateway, with jobs run in process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from engineroom.actors import JobContext, task

TokenFor = Callable[..., str]
#: Set by ``spin`` once it runs, cleared when it is interrupted.
SPINNING = threading.Event()


@task("general", name="control_spin", max_retries=0, timeout_s=600)
def spin(ctx: JobContext) -> None:
    """Busy-loops in pure Python without ever checking for cancellation."""
    SPINNING.set()
    try:
        while True:
            sum(range(100))
    finally:
        SPINNING.clear()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(client: TestClient, token: str, task_name: str = "general.demo", **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"task": task_name, **body}, headers=auth(token))
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_for(client: TestClient, token: str, job_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=auth(token)).json()
        if done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never got there: {job}")


def in_state(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda job: job["state"] in states


def test_transient_failures_retry_with_backoff_until_the_job_succeeds(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = submit(client, token, payload={"duration_s": 0, "fail_attempts": 2}, max_retries=3)
    done = wait_for(client, token, job["id"], in_state("completed", "failed"))
    assert done["state"] == "completed" and done["attempts"] == 3
    retries = [entry for entry in done["history"] if entry["state"] == "retrying"]
    assert len(retries) == 2 and all(entry["error"]["type"] == "TransientError" for entry in retries)


def test_a_job_out_of_retries_fails_with_every_attempts_error(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = submit(client, token, payload={"duration_s": 0, "fail": "transient"}, max_retries=2)
    done = wait_for(client, token, job["id"], in_state("completed", "failed"))
    assert done["state"] == "failed" and done["attempts"] == 3
    assert [entry["state"] for entry in done["history"] if entry["error"]] == ["retrying", "retrying", "failed"]
    failed = client.get("/jobs", params={"state": "failed"}, headers=auth(token)).json()["items"]
    assert job["id"] in {item["id"] for item in failed}


def test_a_permanent_failure_is_not_retried(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = submit(client, token, payload={"duration_s": 0, "fail": "permanent"}, max_retries=5)
    done = wait_for(client, token, job["id"], in_state("completed", "failed"))
    assert (done["state"], done["attempts"]) == ("failed", 1)


def test_a_job_over_its_time_limit_is_stopped_as_a_timeout(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    started = time.monotonic()
    job = submit(client, token, payload={"duration_s": 30, "steps": 300}, timeout_s=1, max_retries=0)
    done = wait_for(client, token, job["id"], in_state("completed", "failed"))
    assert done["state"] == "failed" and done["error"]["type"] == "Timeout" and done["error"]["transient"]
    assert time.monotonic() - started < 10


def test_cancelling_a_running_job_interrupts_it_and_frees_its_thread(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = submit(client, token, "general.control_spin")
    assert SPINNING.wait(10), "the spinning task never started"
    cancelled = client.post(f"/jobs/{job['id']}/cancel", headers=auth(token))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    deadline = time.monotonic() + 2
    while SPINNING.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not SPINNING.is_set(), "the task kept running after its job was cancelled"
    assert client.get(f"/jobs/{job['id']}", headers=auth(token)).json()["state"] == "cancelled"


def test_a_cancelled_queued_job_never_starts(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    # Given both worker threads busy, a third job waits in the queue
    blockers = [submit(client, token, payload={"duration_s": 1, "steps": 10}) for _ in range(2)]
    waiting = submit(client, token, payload={"duration_s": 0})
    assert client.post(f"/jobs/{waiting['id']}/cancel", headers=auth(token)).json()["state"] == "cancelled"
    for blocker in blockers:
        wait_for(client, token, blocker["id"], in_state("completed"))
    time.sleep(0.3)
    final = client.get(f"/jobs/{waiting['id']}", headers=auth(token)).json()
    assert (final["state"], final["attempts"], final["started_at"]) == ("cancelled", 0, None)


def test_finished_jobs_cannot_be_cancelled_and_unfinished_ones_cannot_be_retried_or_deleted(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    running = submit(client, token, payload={"duration_s": 2, "steps": 20})
    assert client.post(f"/jobs/{running['id']}/retry", headers=auth(token)).status_code == 409
    assert client.delete(f"/jobs/{running['id']}", headers=auth(token)).status_code == 409
    client.post(f"/jobs/{running['id']}/cancel", headers=auth(token))
    again = client.post(f"/jobs/{running['id']}/cancel", headers=auth(token))
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_a_failed_job_retried_by_hand_runs_again_with_its_history(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = submit(client, token, payload={"duration_s": 0, "fail_attempts": 1}, max_retries=0)
    failed = wait_for(client, token, job["id"], in_state("failed"))
    retried = client.post(f"/jobs/{job['id']}/retry", headers=auth(token))
    assert retried.status_code == 200 and retried.json()["id"] == job["id"]
    done = wait_for(client, token, job["id"], in_state("completed"))
    assert done["attempts"] == 2
    assert done["history"][: len(failed["history"])] == failed["history"]
    assert client.delete(f"/jobs/{job['id']}", headers=auth(token)).status_code == 204
    assert client.get(f"/jobs/{job['id']}", headers=auth(token)).status_code == 404


def test_an_idempotency_key_returns_the_first_job_to_its_owner_only(client: TestClient, token_for: TokenFor) -> None:
    alice, bob = token_for("alice"), token_for("bob")
    body = {"task": "general.demo", "payload": {"duration_s": 0}}
    first = client.post("/jobs", json=body, headers={**auth(alice), "Idempotency-Key": "k-1"})
    second = client.post("/jobs", json=body, headers={**auth(alice), "Idempotency-Key": "k-1"})
    by_field = client.post("/jobs", json={**body, "idempotency_key": "k-1"}, headers=auth(alice))
    bobs = client.post("/jobs", json=body, headers={**auth(bob), "Idempotency-Key": "k-1"})
    assert (first.status_code, second.status_code, by_field.status_code, bobs.status_code) == (202, 200, 200, 202)
    assert first.json()["id"] == second.json()["id"] == by_field.json()["id"] != bobs.json()["id"]


def test_submit_can_wait_for_the_result(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    body = {"task": "general.demo", "payload": {"duration_s": 0.1, "result": "ok"}}
    quick = client.post("/jobs", params={"wait": 10}, json=body, headers=auth(token))
    assert quick.status_code == 200 and quick.json()["state"] == "completed"
    body["payload"] = {"duration_s": 1, "steps": 2}  # still running when the wait ends; the teardown waits for it
    slow = client.post("/jobs", params={"wait": 0.3}, json=body, headers=auth(token))
    assert slow.status_code == 202 and slow.json()["state"] in ("queued", "running")
    assert client.post("/jobs", params={"wait": 0}, json=body, headers=auth(token)).status_code == 422


def test_a_bad_progress_report_fails_the_job_without_retries(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = submit(client, token, "general.control_bad_progress", max_retries=3)
    done = wait_for(client, token, job["id"], in_state("completed", "failed"))
    assert (done["state"], done["attempts"], done["error"]["type"]) == ("failed", 1, "InvalidProgress")
    assert "0 to 100" in done["error"]["message"]


@task("general", name="control_bad_progress")
def bad_progress(ctx: JobContext) -> None:
    ctx.progress(150, "too far")
