"""Delayed jobs, dependencies between plain jobs, and batch submits, with jobs run in process."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

TokenFor = Callable[..., str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(client: TestClient, token: str, **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"task": "general.demo", **body}, headers=auth(token))
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_state(client: TestClient, token: str, job_id: str, *states: str, timeout_s: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=auth(token)).json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {job['state']}, never {states}")


def test_a_delayed_job_waits_scheduled_and_starts_when_due(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = submit(client, token, payload={"duration_s": 0}, delay_s=1)
    assert job["state"] == "scheduled"
    due = datetime.fromisoformat(job["scheduled_at"])
    done = wait_state(client, token, job["id"], "completed")
    started = datetime.fromisoformat(done["started_at"])
    assert due <= started < due + timedelta(seconds=1)


def test_a_job_scheduled_at_a_past_time_runs_now(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert submit(client, token, payload={"duration_s": 0}, scheduled_at=past)["state"] == "queued"


def test_a_scheduled_job_can_be_cancelled_and_never_runs(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    job = submit(client, token, payload={"duration_s": 0}, delay_s=0.5)
    assert client.post(f"/jobs/{job['id']}/cancel", headers=auth(token)).json()["state"] == "cancelled"
    time.sleep(1.0)
    final = client.get(f"/jobs/{job['id']}", headers=auth(token)).json()
    assert (final["state"], final["attempts"]) == ("cancelled", 0)


def test_a_dependent_job_waits_pending_and_gets_its_dependencies_results(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    first = submit(client, token, payload={"duration_s": 0.3, "result": "draft"})
    second = submit(client, token, task="general.echo_inputs", depends_on=[first["id"]])
    assert second["state"] == "pending"
    done = wait_state(client, token, second["id"], "completed", "cancelled")
    assert done["state"] == "completed"
    assert done["result"] == {first["id"]: {"engine": "general", "steps": 5, "result": "draft"}}


def test_a_dependent_of_a_failed_job_is_skipped_with_the_reason(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    failing = submit(client, token, payload={"duration_s": 0, "fail": "permanent"})
    dependent = submit(client, token, payload={"duration_s": 0}, depends_on=[failing["id"]])
    then = submit(client, token, payload={"duration_s": 0}, depends_on=[dependent["id"]])
    skipped = wait_state(client, token, then["id"], "cancelled", "completed")
    assert skipped["state"] == "cancelled" and "skipped" in skipped["history"][-1]["detail"]
    reason = wait_state(client, token, dependent["id"], "cancelled")["history"][-1]["detail"]
    assert "failed" in reason


@pytest.mark.parametrize(
    ("body", "detail_part"),
    [
        ({"delay_s": 5, "scheduled_at": "2099-01-01T00:00:00Z"}, "not both"),
        ({"delay_s": -1}, "greater than or equal"),
        ({"scheduled_at": "2099-01-01T00:00:00"}, "timezone"),
        ({"depends_on": ["0" * 26]}, "not yours"),
        ({"depends_on": ["short"]}, "at least 26"),
    ],
)
def test_bad_waits_get_a_clear_422(client: TestClient, token_for: TokenFor, body: Any, detail_part: str) -> None:
    response = client.post("/jobs", json={"task": "general.demo", **body}, headers=auth(token_for()))
    assert response.status_code == 422 and detail_part in str(response.json()["detail"])


def test_another_users_job_cannot_be_a_dependency(client: TestClient, token_for: TokenFor) -> None:
    alices = submit(client, token_for("alice"), payload={"duration_s": 0})
    response = client.post(
        "/jobs", json={"task": "general.demo", "depends_on": [alices["id"]]}, headers=auth(token_for("bob"))
    )
    assert response.status_code == 422 and alices["id"] in response.json()["detail"]


def test_a_batch_is_accepted_whole_or_refused_whole(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    good = [{"task": "general.demo", "payload": {"duration_s": 0}, "delay_s": 3600} for _ in range(50)]
    accepted = client.post("/jobs/batch", json={"jobs": good}, headers=auth(token))
    assert accepted.status_code == 202 and len(accepted.json()["ids"]) == 50
    scheduled = client.get("/jobs", params={"state": "scheduled", "limit": 200}, headers=auth(token)).json()["items"]
    assert {job["id"] for job in scheduled} == set(accepted.json()["ids"])
    bad = [*good[:3], {"task": "general.nope"}]
    refused = client.post("/jobs/batch", json={"jobs": bad}, headers=auth(token))
    assert refused.status_code == 422 and "jobs[3]" in refused.json()["detail"]
    too_many = client.post("/jobs/batch", json={"jobs": good * 21}, headers=auth(token))
    assert too_many.status_code in (413, 422)
