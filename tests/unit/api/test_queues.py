"""Queue control through the gateway, with jobs run in process: limits, pause, priorities, stats, roles."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engineroom.core.config import DEFAULT_ENGINE_CONCURRENCY, ENGINES, Settings
from tests.gateway import gateway_settings, in_process_gateway

TokenFor = Callable[..., str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(client: TestClient, token: str, payload: dict[str, Any], **body: Any) -> str:
    response = client.post("/jobs", json={"task": "general.demo", "payload": payload, **body}, headers=auth(token))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def job(client: TestClient, token: str, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=auth(token)).json()
    return found


def wait_all(client: TestClient, token: str, job_ids: list[str], state: str, timeout_s: float = 20) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [job(client, token, job_id) for job_id in job_ids]
        if all(found["state"] == state for found in jobs):
            return jobs
        time.sleep(0.05)
    raise AssertionError(f"not all {state}: {[found['state'] for found in jobs]}")


def most_at_once(jobs: list[dict[str, Any]]) -> int:
    """The largest number of jobs whose [started_at, finished_at] intervals overlap."""
    edges = sorted(
        [(datetime.fromisoformat(found["started_at"]), 1) for found in jobs]
        + [(datetime.fromisoformat(found["finished_at"]), -1) for found in jobs]
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture
def admin(token_for: TokenFor) -> str:
    return token_for("ops", "acme", admin=True)


def test_every_engine_is_listed_with_its_default_limit(client: TestClient, token_for: TokenFor) -> None:
    queues = {queue["engine"]: queue for queue in client.get("/queues", headers=auth(token_for())).json()}
    assert set(queues) == set(ENGINES)
    for engine, limit in DEFAULT_ENGINE_CONCURRENCY.items():
        assert queues[engine]["max_concurrency"] == limit and queues[engine]["paused"] is False
        assert queues[engine]["broker_depth"] == 0


def test_only_admins_control_queues(client: TestClient, token_for: TokenFor, admin: str) -> None:
    user = token_for("alice", "acme")
    for method, path, body in (
        ("POST", "/queues/general/pause", {"reason": "provider down"}),
        ("POST", "/queues/general/resume", None),
        ("PUT", "/queues/general/limits", {"max_concurrency": 5}),
    ):
        response = client.request(method, path, json=body, headers=auth(user))
        assert response.status_code == 403 and "admin" in response.json()["detail"]
    assert client.get("/queues/general", headers=auth(admin)).json()["max_concurrency"] == 2
    assert client.get("/queues/general", headers=auth(user)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "detail_part"),
    [
        ("PUT", "/queues/general/limits", {}, "at least one"),
        ("PUT", "/queues/general/limits", {"max_concurrency": -1}, "greater than or equal"),
        ("PUT", "/queues/general/limits", {"max_concurrency": None}, "cannot be removed"),
        ("PUT", "/queues/general/limits", {"max_starts_per_minute": 0}, "greater than or equal"),
        ("PUT", "/queues/general/limits", {"speed": "fast"}, "Extra inputs"),
        ("POST", "/queues/general/pause", {}, "reason"),
        ("POST", "/queues/general/pause", {"reason": "x", "until": "2020-01-01T00:00:00Z"}, "future"),
        ("POST", "/queues/general/pause", {"reason": "x", "until": "2099-01-01T00:00:00"}, "timezone"),
        ("POST", "/queues/warp_drive/pause", {"reason": "x"}, "pattern"),
    ],
)
def test_bad_queue_requests_get_a_clear_422(
    client: TestClient, admin: str, method: str, path: str, body: Any, detail_part: str
) -> None:
    response = client.request(method, path, json=body, headers=auth(admin))
    assert response.status_code == 422
    assert detail_part in str(response.json()["detail"])


def test_the_limit_holds_and_a_raised_limit_starts_waiting_jobs(client: TestClient, admin: str) -> None:
    client.put("/queues/general/limits", json={"max_concurrency": 1}, headers=auth(admin))
    job_ids = [submit(client, admin, {"duration_s": 0.2, "steps": 1}) for _ in range(4)]
    assert most_at_once(wait_all(client, admin, job_ids, "completed")) == 1
    # Raised while jobs wait, the limit lets more run at once
    client.put("/queues/general/limits", json={"max_concurrency": 0}, headers=auth(admin))
    job_ids = [submit(client, admin, {"duration_s": 0.5, "steps": 1}) for _ in range(2)]
    time.sleep(0.3)
    assert {job(client, admin, job_id)["state"] for job_id in job_ids} == {"queued"}
    raised_at = time.monotonic()
    client.put("/queues/general/limits", json={"max_concurrency": 2}, headers=auth(admin))
    done = wait_all(client, admin, job_ids, "completed")
    assert most_at_once(done) == 2 and time.monotonic() - raised_at < 3


def test_pause_holds_new_jobs_lets_running_ones_finish_and_resume_runs_the_backlog(
    client: TestClient, admin: str, token_for: TokenFor
) -> None:
    running = submit(client, admin, {"duration_s": 0.6, "steps": 6})
    wait_all(client, admin, [running], "running")
    with (
        client.websocket_connect(f"/ws?token={admin}") as admin_socket,
        client.websocket_connect(f"/ws?token={token_for('alice', 'acme')}") as user_socket,
    ):
        admin_socket.receive_json(), user_socket.receive_json()
        paused = client.post("/queues/general/pause", json={"reason": "provider down"}, headers=auth(admin)).json()
        assert (paused["paused"], paused["reason"], paused["paused_by"]) == (True, "provider down", "ops")
        waiting = submit(client, admin, {"duration_s": 0})
        assert wait_all(client, admin, [running], "completed")
        time.sleep(0.5)
        held = job(client, admin, waiting)
        assert held["state"] == "queued" and held["started_at"] is None
        client.post("/queues/general/resume", headers=auth(admin))
        wait_all(client, admin, [waiting], "completed")
        seen: list[str] = []
        while len(seen) < 2:
            event = admin_socket.receive_json()
            if event["type"].startswith("queue."):
                seen.append(event["type"])
        assert seen == ["queue.paused", "queue.resumed"]
        user_socket.send_json({"op": "ping"})
        assert user_socket.receive_json() == {"type": "pong"}  # no queue event reached the non-admin


def test_a_pause_until_a_time_resumes_by_itself(client: TestClient, admin: str) -> None:
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    client.post("/queues/general/pause", json={"reason": "maintenance", "until": until}, headers=auth(admin))
    job_id = submit(client, admin, {"duration_s": 0})
    done = wait_all(client, admin, [job_id], "completed", timeout_s=10)
    assert datetime.fromisoformat(done[0]["started_at"]) >= datetime.fromisoformat(until)
    assert client.get("/queues/general", headers=auth(admin)).json()["paused"] is False


def test_after_resume_the_backlog_starts_in_priority_order(client: TestClient, admin: str) -> None:
    client.put("/queues/general/limits", json={"max_concurrency": 1}, headers=auth(admin))
    client.post("/queues/general/pause", json={"reason": "hold"}, headers=auth(admin))
    normal = [submit(client, admin, {"duration_s": 0}, priority="normal") for _ in range(20)]
    low = submit(client, admin, {"duration_s": 0}, priority="low")
    high = submit(client, admin, {"duration_s": 0}, priority="high")
    queued = job(client, admin, high)
    assert queued["position"] == 0
    assert job(client, admin, low)["position"] == 21
    client.post("/queues/general/resume", headers=auth(admin))
    done = {found["id"]: found for found in wait_all(client, admin, [*normal, low, high], "completed")}
    order = sorted(done, key=lambda job_id: done[job_id]["started_at"])
    assert order[0] == high and order[-1] == low
    assert order[1:-1] == sorted(normal)  # equal priorities start oldest first


@pytest.fixture
def slow_ticking_client(settings: Settings, mongodb_url: str) -> Iterator[TestClient]:
    """A gateway whose scheduler ticks once a second: what runs sooner was started by the workers themselves."""
    with in_process_gateway(gateway_settings(settings, mongodb_url, scheduler_interval_s=1.0)) as test_client:
        yield test_client


def test_a_released_backlog_runs_as_many_at_once_as_the_limit_allows(
    slow_ticking_client: TestClient, admin: str
) -> None:
    # Jobs released from the line together are peers: none may wait for another whose message still travels (it
    # would go back to the line until the next tick, and the engine would run one job at a time)
    client = slow_ticking_client
    client.put("/queues/general/limits", json={"max_concurrency": 2}, headers=auth(admin))
    client.post("/queues/general/pause", json={"reason": "hold"}, headers=auth(admin))
    job_ids = [submit(client, admin, {"duration_s": 0.6, "steps": 1}) for _ in range(4)]
    time.sleep(0.3)  # the paused engine's messages are consumed and parked
    client.post("/queues/general/resume", headers=auth(admin))
    done = sorted(wait_all(client, admin, job_ids, "completed"), key=lambda found: found["started_at"])
    assert most_at_once(done) == 2
    for first, second in (done[0:2], done[2:4]):  # two at a time from the start: the pairs overlap
        assert second["started_at"] < first["finished_at"], [
            (found["started_at"], found["finished_at"]) for found in done
        ]


def test_a_rate_limit_spaces_starts_over_the_window(client: TestClient, admin: str) -> None:
    # The test settings use a 2 s rate window (ENGINEROOM_RATE_WINDOW_S) in place of a minute
    client.put("/queues/general/limits", json={"max_starts_per_minute": 2}, headers=auth(admin))
    job_ids = [submit(client, admin, {"duration_s": 0}) for _ in range(5)]
    starts = sorted(
        datetime.fromisoformat(found["started_at"]) for found in wait_all(client, admin, job_ids, "completed")
    )
    for earlier, later in zip(starts, starts[2:], strict=False):
        assert later - earlier >= timedelta(seconds=2), "three starts inside one window"


def test_a_tenant_at_its_cap_does_not_hold_back_another_tenant(client: TestClient, token_for: TokenFor) -> None:
    ops = token_for("ops", "flood", admin=True)
    client.put(
        "/queues/general/limits", json={"max_concurrency": 2, "max_concurrency_per_tenant": 1}, headers=auth(ops)
    )
    flood = [submit(client, ops, {"duration_s": 0.3, "steps": 1}) for _ in range(4)]
    other = token_for("bob", "quiet")
    quiet = submit(client, other, {"duration_s": 0})
    flooded = wait_all(client, ops, flood, "completed")
    assert most_at_once(flooded) == 1
    quiet_done = wait_all(client, other, [quiet], "completed")[0]
    assert quiet_done["started_at"] < max(found["started_at"] for found in flooded)


def test_stats_count_jobs_by_state(client: TestClient, admin: str) -> None:
    client.post("/queues/general/pause", json={"reason": "count"}, headers=auth(admin))
    held = [submit(client, admin, {"duration_s": 0}) for _ in range(3)]
    failed = client.post(
        "/jobs",
        json={"task": "image_generation.demo", "payload": {"duration_s": 0, "fail": "permanent"}},
        headers=auth(admin),
    ).json()["id"]
    wait_all(client, admin, [failed], "failed")
    wait_all(client, admin, held, "queued")
    time.sleep(0.3)  # the paused engine's messages are consumed and parked
    queues = {queue["engine"]: queue for queue in client.get("/queues", headers=auth(admin)).json()}
    assert (queues["general"]["queued"], queues["general"]["waiting_for_slot"]) == (3, 3)
    assert queues["general"]["running"] == 0
    image = queues["image_generation"]
    assert (image["failed_last_hour"], image["completed_last_hour"], image["success_rate"]) == (1, 0, 0.0)
    assert image["p50_duration_s"] is not None and image["jobs_per_minute"] == pytest.approx(0.2)
