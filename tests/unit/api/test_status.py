"""``GET /status`` and one engine's failure analysis, after real jobs in process."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.api.test_jobs import TokenFor, auth, wait_for_state


def submit(client: TestClient, token: str, payload: dict[str, object]) -> str:
    response = client.post("/jobs", json={"task": "general.demo", "payload": payload}, headers=auth(token))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_status_sums_up_jobs_errors_and_the_backlog(client: TestClient, token_for: TokenFor) -> None:
    token, admin = token_for("alice", "acme"), token_for("root", "acme", admin=True)
    done = [submit(client, token, {"duration_s": 0.05}) for _ in range(2)]
    failed = [submit(client, token, {"duration_s": 0, "fail": "permanent"}) for _ in range(3)]
    for job_id in done:
        wait_for_state(client, job_id, token, {"completed"})
    for job_id in failed:
        wait_for_state(client, job_id, token, {"failed"})
    client.post("/queues/general/pause", json={"reason": "hold"}, headers=auth(admin))
    held = [submit(client, token, {"duration_s": 0}) for _ in range(4)]

    status = client.get("/status", headers=auth(token)).json()
    assert status["totals"]["completed"] == 2 and status["totals"]["failed"] == 3
    assert status["totals"]["queued"] == len(held)
    assert status["success_rate_last_hour"] == 2 / 5
    assert (status["max_queue_size"], status["max_queue_engine"]) == (4, "general")
    assert 0 <= status["oldest_queued_age_s"] < 30
    assert status["top_errors"] == [
        {"engine": "general", "task": "general.demo", "error_type": "PermanentError", "last_hour": 3, "last_day": 3}
    ]
    (hour,) = status["duration_trend"]
    assert hour["finished"] == 5 and hour["p95_duration_s"] >= hour["p50_duration_s"] >= 0

    engine = client.get("/queues/general", headers=auth(token)).json()
    assert engine["top_errors"] == status["top_errors"] and engine["duration_trend"] == status["duration_trend"]
    assert client.get("/queues/image_generation", headers=auth(token)).json()["top_errors"] == []
    assert client.get("/status").status_code == 401
