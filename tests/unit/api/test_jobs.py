"""REST and WebSocket behaviour of the gateway, in process: bad input, auth, isolation, the happy path."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from engineroom.core.config import ENGINES

TokenFor = Callable[..., str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for_state(client: TestClient, job_id: str, token: str, states: set[str], timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}", headers=auth(token)).json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}")


def test_a_submitted_job_completes_and_its_events_arrive_in_order(client: TestClient, token_for: TokenFor) -> None:
    token = token_for("alice", "acme")
    with client.websocket_connect(f"/ws?token={token}") as socket:
        assert socket.receive_json()["type"] == "hello"
        body = {"task": "general.demo", "payload": {"duration_s": 0.05, "steps": 2, "result": {"n": 1}}}
        response = client.post("/jobs", json=body, headers=auth(token))
        assert response.status_code == 202
        job_id = response.json()["id"]
        types: list[str] = []
        while not types or types[-1] != "job.completed":
            event = socket.receive_json()
            if event["type"] == "notification.created":
                continue  # the job's start and end notify alice too (tests/unit/api/test_notifications.py)
            assert event["job_id"] == job_id
            types.append(event["type"])
    assert types == ["job.queued", "job.started", "job.progress", "job.progress", "job.completed"]
    job = wait_for_state(client, job_id, token, {"completed"})
    assert job["result"] == {"engine": "general", "steps": 2, "result": {"n": 1}}
    assert job["attempts"] == 1 and job["progress"]["percent"] == 100
    assert [entry["state"] for entry in job["history"]] == ["queued", "running", "completed"]


def test_a_failing_task_stores_its_error_with_traceback(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    body = {"task": "image_generation.demo", "payload": {"duration_s": 0, "steps": 1, "fail": "permanent"}}
    job_id = client.post("/jobs", json=body, headers=auth(token)).json()["id"]
    job = wait_for_state(client, job_id, token, {"failed"})
    assert job["error"]["type"] == "PermanentError"
    assert job["error"]["message"] == "demo permanent failure"
    assert "Traceback" in job["error"]["traceback"] and job["error"]["transient"] is False


@pytest.mark.parametrize(
    ("body", "status", "detail_part"),
    [
        ({"task": "general.nope"}, 422, "unknown task"),
        ({"task": "general.demo", "priority": 11}, 422, "less than or equal to 10"),
        ({"task": "general.demo", "priority": "urgent"}, 422, "priority must be"),
        ({"task": "general.demo", "payload": [1, 2]}, 422, "valid dictionary"),
        ({"task": "general.demo", "payload": {"steps": "many"}}, 422, "steps"),
        ({"task": "general.demo", "surprise": 1}, 422, "Extra inputs"),
        ([{"task": "general.demo"}], 422, "JSON object"),
        ({"task": "general.demo", "payload": {"result": "x" * 70_000}}, 413, "exceeds"),
    ],
)
def test_bad_submissions_get_a_clear_4xx(
    client: TestClient, token_for: TokenFor, body: Any, status: int, detail_part: str
) -> None:
    response = client.post("/jobs", json=body, headers=auth(token_for()))
    assert response.status_code == status
    assert detail_part in str(response.json()["detail"])


def test_malformed_json_gets_422(client: TestClient, token_for: TokenFor) -> None:
    headers = {**auth(token_for()), "Content-Type": "application/json"}
    response = client.post("/jobs", content=b'{"task": ', headers=headers)
    assert response.status_code == 422


def test_a_chunked_body_over_the_limit_gets_413(client: TestClient, token_for: TokenFor) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    response = client.post("/jobs", content=chunks(), headers={**auth(token_for()), "Content-Type": "application/json"})
    assert response.status_code == 413


def test_named_priorities_are_accepted(client: TestClient, token_for: TokenFor) -> None:
    body = {"task": "general.demo", "priority": "high", "payload": {"duration_s": 0}}
    response = client.post("/jobs", json=body, headers=auth(token_for()))
    assert response.status_code == 202 and response.json()["priority"] == 8


def test_another_user_or_tenant_gets_404_and_hears_nothing(client: TestClient, token_for: TokenFor) -> None:
    alice, bob, mallory = token_for("alice", "acme"), token_for("bob", "acme"), token_for("alice", "evil")
    with (
        client.websocket_connect(f"/ws?token={bob}") as bob_socket,
        client.websocket_connect(f"/ws?token={mallory}") as mallory_socket,
    ):
        for socket in (bob_socket, mallory_socket):
            assert socket.receive_json()["type"] == "hello"
        job_id = client.post("/jobs", json={"task": "general.demo", "payload": {"duration_s": 0}}, headers=auth(alice))
        job_id = job_id.json()["id"]
        wait_for_state(client, job_id, alice, {"completed"})
        for stranger in (bob, mallory):
            assert client.get(f"/jobs/{job_id}", headers=auth(stranger)).status_code == 404
            assert client.get("/jobs", headers=auth(stranger)).json()["items"] == []
        # Each stranger's socket answers a ping before anything else: no event of alice's was queued for it.
        for socket in (bob_socket, mallory_socket):
            socket.send_json({"op": "ping"})
            assert socket.receive_json() == {"type": "pong"}
    assert client.get(f"/jobs/{job_id}", headers=auth(token_for("root", "acme", admin=True))).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic YWxpY2U6c2VjcmV0"])
def test_requests_without_a_valid_token_get_401(client: TestClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/tasks"), ("GET", "/jobs/" + "0" * 26)):
        response = client.request(method, path, headers=headers, json={"task": "general.demo"})
        assert response.status_code == 401, (method, path)
        assert response.json()["detail"]


def test_a_websocket_with_a_bad_token_is_refused_with_401(client: TestClient) -> None:
    for path in ("/ws", "/ws?token=forged"):
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect(path):
            pass
        assert refused.value.status_code == 401


def test_the_token_may_come_as_a_bearer_subprotocol(client: TestClient, token_for: TokenFor) -> None:
    with client.websocket_connect("/ws", subprotocols=["bearer", token_for("alice", "acme")]) as socket:
        assert socket.accepted_subprotocol == "bearer"
        assert socket.receive_json()["user"] == "alice"


def test_unknown_or_malformed_frames_get_an_error_and_the_socket_stays_open(
    client: TestClient, token_for: TokenFor
) -> None:
    with client.websocket_connect(f"/ws?token={token_for()}") as socket:
        socket.receive_json()
        socket.send_text("not json")
        assert socket.receive_json()["type"] == "error"
        socket.send_json({"op": "dance"})
        assert "dance" in socket.receive_json()["detail"]
        socket.send_json({"op": "ping"})
        assert socket.receive_json() == {"type": "pong"}


def test_tasks_lists_every_engine_demo_with_its_schema(client: TestClient, token_for: TokenFor) -> None:
    tasks = {entry["name"]: entry for entry in client.get("/tasks", headers=auth(token_for())).json()}
    for engine in ENGINES:
        assert tasks[f"{engine}.demo"]["engine"] == engine
        assert "duration_s" in tasks[f"{engine}.demo"]["payload_schema"]["properties"]


def test_health_and_readiness_answer(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"mongodb": "ok", "rabbitmq": "ok"}


def test_list_rejects_a_malformed_cursor_and_limit(client: TestClient, token_for: TokenFor) -> None:
    assert client.get("/jobs?cursor=abc", headers=auth(token_for())).status_code == 422
    assert client.get("/jobs?limit=0", headers=auth(token_for())).status_code == 422
    assert client.get("/jobs?state=bogus", headers=auth(token_for())).status_code == 422
