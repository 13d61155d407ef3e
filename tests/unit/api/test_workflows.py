"""Workflows through the gateway, with steps run in process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

TokenFor = Callable[..., str]

#: The seed's shape: draft text, then render an image and narrate audio in parallel, then assemble a video.
DIAMOND = {
    "name": "post",
    "steps": [
        {"id": "draft", "task": "text_intelligence.demo", "payload": {"duration_s": 0.1, "result": "text"}},
        {"id": "image", "task": "general.echo_inputs", "depends_on": ["draft"]},
        {"id": "audio", "task": "general.echo_inputs", "depends_on": ["draft"]},
        {"id": "video", "task": "general.echo_inputs", "depends_on": ["image", "audio"]},
    ],
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(client: TestClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/workflows", json=body, headers=auth(token))
    assert response.status_code == 201, response.text
    workflow: dict[str, Any] = response.json()
    return workflow


def wait_ended(client: TestClient, token: str, workflow_id: str, timeout_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workflow: dict[str, Any] = client.get(f"/workflows/{workflow_id}", headers=auth(token)).json()
        if workflow["state"] != "running":
            return workflow
        time.sleep(0.05)
    raise AssertionError(f"workflow still running: {[(s['id'], s['state']) for s in workflow['steps']]}")


def steps(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in workflow["steps"]}


def test_a_diamond_runs_its_branches_and_passes_results_down(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    with client.websocket_connect(f"/ws?token={token}") as socket:
        socket.receive_json()
        workflow = create(client, token, DIAMOND)
        assert steps(workflow)["draft"]["state"] == "queued" and steps(workflow)["video"]["state"] == "pending"
        done = wait_ended(client, token, workflow["id"])
        while (event := socket.receive_json())["type"] != "workflow.completed":
            about = event["data"] if event["type"] == "notification.created" else event  # notifications: in data
            assert about["workflow_id"] == workflow["id"]
    assert done["state"] == "completed" and event["data"]["steps"]["video"] == "completed"
    by_id = steps(done)
    draft = {"engine": "text_intelligence", "steps": 5, "result": "text"}
    assert by_id["image"]["result"] == {"draft": draft} == by_id["audio"]["result"]
    assert by_id["video"]["result"] == {"image": {"draft": draft}, "audio": {"draft": draft}}
    jobs = {
        job["step_id"]: job
        for job in client.get("/jobs", params={"workflow_id": workflow["id"]}, headers=auth(token)).json()["items"]
    }
    assert jobs["image"]["started_at"] > jobs["draft"]["finished_at"]
    assert jobs["video"]["started_at"] > max(jobs["image"]["finished_at"], jobs["audio"]["finished_at"])


def test_a_failure_branch_runs_and_the_success_branch_is_skipped_in_cascade(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    body = {
        "steps": [
            {"id": "call", "task": "general.demo", "payload": {"duration_s": 0, "fail": "permanent"}, "max_retries": 0},
            {"id": "on_error", "task": "general.echo_inputs", "depends_on": ["call"], "condition": "failure"},
            {"id": "next", "task": "general.demo", "payload": {"duration_s": 0}, "depends_on": ["call"]},
            {"id": "after_next", "task": "general.demo", "payload": {"duration_s": 0}, "depends_on": ["next"]},
            {
                "id": "always",
                "task": "general.demo",
                "payload": {"duration_s": 0},
                "depends_on": ["next"],
                "condition": "completion",
            },
        ]
    }
    done = steps(wait_ended(client, token, create(client, token, body)["id"]))
    assert done["call"]["state"] == "failed"
    assert done["on_error"]["state"] == "completed"
    assert done["on_error"]["result"]["call"]["error"]["type"] == "PermanentError"
    assert done["next"]["state"] == "cancelled" and done["after_next"]["state"] == "cancelled"
    assert done["always"]["state"] == "completed"
    workflow = client.get(f"/jobs/{done['after_next']['job_id']}", headers=auth(token)).json()
    assert "skipped" in workflow["history"][-1]["detail"]


def test_cancelling_a_workflow_stops_its_running_step_and_skips_the_rest(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    body = {
        "steps": [
            {"id": "slow", "task": "general.demo", "payload": {"duration_s": 20, "steps": 200}},
            {"id": "then", "task": "general.demo", "payload": {"duration_s": 0}, "depends_on": ["slow"]},
        ]
    }
    workflow = create(client, token, body)
    slow_job = steps(workflow)["slow"]["job_id"]
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{slow_job}", headers=auth(token)).json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = client.post(f"/workflows/{workflow['id']}/cancel", headers=auth(token))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    assert {step["state"] for step in cancelled.json()["steps"]} == {"cancelled"}, cancelled.text
    time.sleep(0.5)
    slow = client.get(f"/jobs/{slow_job}", headers=auth(token)).json()
    assert slow["state"] == "cancelled" and slow["progress"]["percent"] < 50
    assert client.post(f"/workflows/{workflow['id']}/cancel", headers=auth(token)).status_code == 409


@pytest.mark.parametrize(
    ("steps_body", "detail_part"),
    [
        (
            [
                {"id": "a", "task": "general.demo", "depends_on": ["b"]},
                {"id": "b", "task": "general.demo", "depends_on": ["a"]},
            ],
            "cycle: a -> b -> a",
        ),
        ([{"id": "a", "task": "general.demo", "depends_on": ["a"]}], "cycle"),
        ([{"id": "a", "task": "general.demo", "depends_on": ["ghost"]}], "unknown steps: ghost"),
        ([{"id": "a", "task": "general.demo"}, {"id": "a", "task": "general.demo"}], "duplicate step ids: a"),
        ([{"id": "a", "task": "general.nope"}], "step 'a': unknown task"),
        ([{"id": "a", "task": "general.demo", "payload": {"steps": "many"}}], "step 'a': invalid payload"),
        ([{"id": "a", "task": "general.demo", "condition": "sometimes"}], "condition"),
        ([], "at least 1"),
    ],
)
def test_each_invalid_definition_gets_a_422_naming_the_problem(
    client: TestClient, token_for: TokenFor, steps_body: list[dict[str, Any]], detail_part: str
) -> None:
    response = client.post("/workflows", json={"steps": steps_body}, headers=auth(token_for()))
    assert response.status_code == 422
    assert detail_part in str(response.json()["detail"])


def test_another_users_workflow_is_not_found(client: TestClient, token_for: TokenFor) -> None:
    workflow = create(
        client, token_for("alice"), {"steps": [{"id": "a", "task": "general.demo", "payload": {"duration_s": 0}}]}
    )
    for path in (f"/workflows/{workflow['id']}", f"/workflows/{workflow['id']}/cancel"):
        method = "GET" if path.endswith(workflow["id"]) else "POST"
        assert client.request(method, path, headers=auth(token_for("bob"))).status_code == 404
    assert client.get("/workflows", headers=auth(token_for("bob"))).json()["items"] == []
