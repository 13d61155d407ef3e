"""``GET /metrics`` on the gateway: counters move after real jobs, queue gauges are read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

TokenFor = Callable[..., str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics`` by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until_finished(client: TestClient, job_id: str, token: str) -> None:
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{job_id}", headers=auth(token)).json()["state"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(0.05)


def test_job_event_and_http_metrics_move_after_real_jobs(client: TestClient, token_for: TokenFor) -> None:
    # Given the counters as they stand (they are process-wide: other tests move them too)
    token = token_for()
    before = scrape(client)
    # When a job completes and another fails for good
    ok = {"task": "general.demo", "payload": {"duration_s": 0.05, "steps": 1}}
    bad = {"task": "general.demo", "payload": {"duration_s": 0, "steps": 1, "fail": "permanent"}}
    ids = [client.post("/jobs", json=body, headers=auth(token)).json()["id"] for body in (ok, bad)]
    for job_id in ids:
        wait_until_finished(client, job_id, token)
    after = scrape(client)

    # Then each counter moved by what happened
    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    job = {"engine": "general", "task": "general.demo"}
    assert delta("engineroom_jobs_submitted_total", **job) == 2
    assert delta("engineroom_jobs_finished_total", **job, state="completed") == 1
    assert delta("engineroom_jobs_finished_total", **job, state="failed") == 1
    assert delta("engineroom_job_duration_seconds_count", **job) == 2
    assert delta("engineroom_job_duration_seconds_sum", **job) >= 0.05
    assert delta("engineroom_events_published_total", type="job.queued") == 2
    assert delta("engineroom_events_published_total", type="job.completed") == 1
    # HTTP requests are labelled by route template, not by the job id in the path
    assert delta("engineroom_http_requests_total", method="POST", route="/jobs", status="202") == 2
    assert delta("engineroom_http_requests_total", method="GET", route="/jobs/{job_id}", status="200") >= 2
    assert delta("engineroom_http_request_duration_seconds_count", method="POST", route="/jobs") == 2
    assert not any(name == "engineroom_http_requests_total" and ("route", ids[0]) in labels for name, labels in after)


def test_unmatched_paths_and_errors_are_counted_without_their_raw_path(client: TestClient) -> None:
    before = scrape(client)
    assert client.get("/no/such/path/123").status_code == 404
    assert client.get("/jobs").status_code == 401
    after = scrape(client)
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert (
        value(after, "engineroom_http_requests_total", **unmatched)
        - value(before, "engineroom_http_requests_total", **unmatched)
        == 1
    )
    unauthenticated = {"method": "GET", "route": "/jobs", "status": "401"}
    assert value(after, "engineroom_http_requests_total", **unauthenticated) > value(
        before, "engineroom_http_requests_total", **unauthenticated
    )


def test_queue_gauges_are_read_from_the_stores_at_scrape_time(client: TestClient, token_for: TokenFor) -> None:
    # Given a paused engine with a limit of 4 and two jobs waiting in it
    admin = auth(token_for("root", "acme", admin=True))
    assert client.post("/queues/video_pipeline/pause", json={"reason": "test"}, headers=admin).status_code == 200
    assert client.put("/queues/video_pipeline/limits", json={"max_concurrency": 4}, headers=admin).status_code == 200
    body = {"task": "video_pipeline.demo", "payload": {"duration_s": 0, "steps": 1}}
    for _ in range(2):
        assert client.post("/jobs", json=body, headers=admin).status_code == 202
    # Then the scrape shows them
    samples = scrape(client)
    assert value(samples, "engineroom_queue_depth", engine="video_pipeline") == 2
    assert value(samples, "engineroom_queue_running", engine="video_pipeline") == 0
    assert value(samples, "engineroom_queue_limit", engine="video_pipeline") == 4
    assert value(samples, "engineroom_queue_paused", engine="video_pipeline") == 1
    assert value(samples, "engineroom_queue_limit", engine="text_intelligence") == 3


def test_websocket_connections_and_deliveries_are_counted(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    before = scrape(client)
    assert value(before, "engineroom_websocket_connections") == 0
    with client.websocket_connect(f"/ws?token={token}") as socket:
        assert socket.receive_json()["type"] == "hello"
        assert value(scrape(client), "engineroom_websocket_connections") == 1
        body = {"task": "general.demo", "payload": {"duration_s": 0, "steps": 1}}
        client.post("/jobs", json=body, headers=auth(token))
        while socket.receive_json()["type"] != "job.completed":
            pass
    after = scrape(client)
    delivered = value(after, "engineroom_events_delivered_total", type="job.completed") - value(
        before, "engineroom_events_delivered_total", type="job.completed"
    )
    assert delivered == 1
    assert value(after, "engineroom_websocket_connections") == 0
