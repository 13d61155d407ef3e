"""Workflows through the gateway, with steps run in process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from engineroom.models.workflow import StepRecord, WorkflowDocument, WorkflowState
from engineroom.store.workflows import WorkflowStore

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
        assert (
            steps(workflow)["draft"]["state"] in ("queued", "running")
            and steps(workflow)["video"]["state"] == "pending"
        )
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


def append(client: TestClient, token: str, workflow_id: str, new_steps: list[dict[str, Any]]) -> httpx2.Response:
    return client.post(f"/workflows/{workflow_id}/steps", json={"steps": new_steps}, headers=auth(token))


def slow_workflow(client: TestClient, token: str) -> dict[str, Any]:
    """A running workflow: one finished step (``draft``) and one that runs long enough to append to it."""
    body = {
        "steps": [
            {"id": "draft", "task": "general.demo", "payload": {"duration_s": 0, "result": "text"}},
            {"id": "slow", "task": "general.demo", "payload": {"duration_s": 30, "steps": 300}},
        ]
    }
    workflow = create(client, token, body)
    draft_job = steps(workflow)["draft"]["job_id"]
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{draft_job}", headers=auth(token)).json()["state"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return workflow


def test_a_step_appended_to_a_running_workflow_receives_its_finished_dependencys_result(
    client: TestClient, token_for: TokenFor
) -> None:
    # Given a running workflow whose first step has finished
    token = token_for()
    workflow = slow_workflow(client, token)
    # When two steps are appended: one on the finished step, one on the new step and on a step still running
    response = append(
        client,
        token,
        workflow["id"],
        [
            {"id": "echo", "task": "general.echo_inputs", "depends_on": ["draft"]},
            {"id": "after", "task": "general.echo_inputs", "depends_on": ["echo", "slow"], "condition": "completion"},
        ],
    )
    # Then both are in the workflow at once, the first runs with the draft's result, the second waits
    assert response.status_code == 200, response.text
    assert [step["id"] for step in response.json()["steps"]] == ["draft", "slow", "echo", "after"]
    assert steps(response.json())["echo"]["state"] == "pending"
    echo_job = steps(response.json())["echo"]["job_id"]
    deadline = time.monotonic() + 10
    while (echo := client.get(f"/jobs/{echo_job}", headers=auth(token)).json())["state"] != "completed":
        assert time.monotonic() < deadline, echo
        time.sleep(0.05)
    assert echo["result"] == {"draft": {"engine": "general", "steps": 5, "result": "text"}}
    assert echo["workflow_id"] == workflow["id"] and echo["step_id"] == "echo"
    assert steps(client.get(f"/workflows/{workflow['id']}", headers=auth(token)).json())["after"]["state"] == "pending"
    # And cancelling the workflow cancels the appended step that was still waiting
    cancelled = client.post(f"/workflows/{workflow['id']}/cancel", headers=auth(token)).json()
    assert steps(cancelled)["after"]["state"] == "cancelled" and steps(cancelled)["echo"]["state"] == "completed"


def test_an_appended_step_whose_condition_cannot_hold_is_skipped_and_the_workflow_still_ends(
    client: TestClient, token_for: TokenFor
) -> None:
    token = token_for()
    workflow = slow_workflow(client, token)
    response = append(
        client,
        token,
        workflow["id"],
        [{"id": "on_error", "task": "general.demo", "depends_on": ["draft"], "condition": "failure"}],
    )
    assert response.status_code == 200, response.text
    client.post(f"/jobs/{steps(workflow)['slow']['job_id']}/cancel", headers=auth(token))
    done = wait_ended(client, token, workflow["id"])
    assert steps(done)["on_error"]["state"] == "cancelled" and done["state"] == "completed"


def test_appending_to_an_ended_workflow_is_a_conflict(client: TestClient, token_for: TokenFor) -> None:
    token = token_for()
    workflow = create(client, token, {"steps": [{"id": "a", "task": "general.demo", "payload": {"duration_s": 0}}]})
    assert wait_ended(client, token, workflow["id"])["state"] == "completed"
    response = append(client, token, workflow["id"], [{"id": "b", "task": "general.demo", "depends_on": ["a"]}])
    assert response.status_code == 409 and "ended" in response.json()["detail"]
    assert len(client.get(f"/workflows/{workflow['id']}", headers=auth(token)).json()["steps"]) == 1
    assert len(client.get("/jobs", params={"workflow_id": workflow["id"]}, headers=auth(token)).json()["items"]) == 1


@pytest.mark.parametrize(
    ("new_steps", "detail_part"),
    [
        (
            [
                {"id": "x", "task": "general.demo", "depends_on": ["slow", "y"]},
                {"id": "y", "task": "general.demo", "depends_on": ["x"]},
            ],
            "cycle: x -> y -> x",
        ),
        ([{"id": "x", "task": "general.demo", "depends_on": ["ghost"]}], "step 'x' depends on unknown steps: ghost"),
        ([{"id": "draft", "task": "general.demo"}], "already has steps: draft"),
        ([{"id": "x", "task": "general.demo"}, {"id": "x", "task": "general.demo"}], "duplicate step ids: x"),
        ([{"id": "x", "task": "general.nope", "depends_on": ["draft"]}], "step 'x': unknown task"),
        ([{"id": "x", "task": "general.demo", "payload": {"steps": "many"}}], "step 'x': invalid payload"),
        ([], "at least 1"),
    ],
)
def test_each_invalid_append_gets_a_422_naming_the_problem_and_adds_nothing(
    client: TestClient, token_for: TokenFor, new_steps: list[dict[str, Any]], detail_part: str
) -> None:
    token = token_for()
    workflow = create(
        client,
        token,
        {
            "steps": [
                {"id": "draft", "task": "general.demo", "payload": {"duration_s": 0}},
                {"id": "slow", "task": "general.demo", "payload": {"duration_s": 30, "steps": 300}},
            ]
        },
    )
    response = append(client, token, workflow["id"], new_steps)
    assert response.status_code == 422, response.text
    assert detail_part in str(response.json()["detail"])
    assert len(client.get("/jobs", params={"workflow_id": workflow["id"]}, headers=auth(token)).json()["items"]) == 2
    client.post(f"/workflows/{workflow['id']}/cancel", headers=auth(token))


def test_appending_to_another_users_workflow_is_not_found(client: TestClient, token_for: TokenFor) -> None:
    workflow = slow_workflow(client, token_for("alice"))
    response = append(client, token_for("bob"), workflow["id"], [{"id": "x", "task": "general.demo"}])
    assert response.status_code == 404
    assert (
        append(client, token_for("bob"), "0" * len(workflow["id"]), [{"id": "x", "task": "general.demo"}]).status_code
        == 404
    )
    client.post(f"/workflows/{workflow['id']}/cancel", headers=auth(token_for("alice")))


def test_a_workflow_ending_between_the_check_and_the_write_gains_no_steps_and_their_jobs_are_withdrawn(
    client: TestClient, token_for: TokenFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a workflow that ends just before the write that would add the steps
    token = token_for()
    workflow = slow_workflow(client, token)
    append_steps = WorkflowStore.append_steps

    async def ending_first(
        store: WorkflowStore, workflow_id: str, new_steps: list[StepRecord], *, max_steps: int
    ) -> WorkflowDocument | None:
        await store.finish(workflow_id, WorkflowState.CANCELLED)
        return await append_steps(store, workflow_id, new_steps, max_steps=max_steps)

    monkeypatch.setattr(WorkflowStore, "append_steps", ending_first)
    # When steps are appended
    response = append(client, token, workflow["id"], [{"id": "echo", "task": "general.echo_inputs"}])
    # Then the append is refused, the workflow keeps its steps, and the job made for the step is cancelled
    assert response.status_code == 409 and "ended" in response.json()["detail"], response.text
    assert [step["id"] for step in client.get(f"/workflows/{workflow['id']}", headers=auth(token)).json()["steps"]] == [
        "draft",
        "slow",
    ]
    jobs = client.get("/jobs", params={"workflow_id": workflow["id"]}, headers=auth(token)).json()["items"]
    assert {job["step_id"]: job["state"] for job in jobs}["echo"] == "cancelled"
    client.post(f"/jobs/{steps(workflow)['slow']['job_id']}/cancel", headers=auth(token))
